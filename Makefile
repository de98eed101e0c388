# The two commands of the README: `make demo` and `make test`. Both create .venv on a fresh
# machine and reinstall the package when setup.py changes. `make demo` is the code task
# (configs/demo_code.py); `make demo-math` the embedded math task (configs/demo.py).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo demo-code demo-math test install clean-venv

$(STAMP): setup.py
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/python -m restem_jax.main --config=configs/demo_code.py --workdir=runs/demo

demo-code: demo

demo-math: $(STAMP)
	$(VENV)/bin/python -m restem_jax.main --config=configs/demo.py --workdir=runs/demo_math

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q tests

clean-venv:
	rm -rf $(VENV)
