"""Few-shot prompts, stored as JSON data files beside this module and chosen by name in configs.

A prompt file holds

  {"description": str,
   "template": str,     # how one problem is shown, with {field} placeholders (e.g. {question})
   "separator": str,    # between consecutive examples, and before the problem
   "stop": [str, ...],  # where a completion ends when a base model runs on into a new example
   "examples": [{FIELD: str, ..., "solution": str}, ...]}

and the prompt for a problem is

  template(ex1) + solution1 + separator + ... + template(exN) + solutionN + separator
  + template(problem)

so the model's continuation is the problem's solution. `num_shots=0` gives the template alone
(the instruction-free format fine-tuned models and from-scratch models are trained on).
"""

from __future__ import annotations

import dataclasses
import json
import string
from collections.abc import Mapping

from etils import epath

_DIR = epath.Path(__file__).parent
# Prompt sets shipped with the package (restem_jax/data/NAME.json).
BUILTIN = ("math_minerva_4shot", "gsm8k_cot_8shot", "apps_3shot", "humaneval_0shot",
           "arith_3shot", "prog_2shot", "qa_0shot")


@dataclasses.dataclass(frozen=True)
class PromptSet:
  """A few-shot prompt: a template for one problem and worked examples."""
  name: str
  template: str
  separator: str
  stop: tuple[str, ...]
  examples: tuple[Mapping[str, str], ...]

  @property
  def fields(self) -> tuple[str, ...]:
    """The placeholders of the template, in order."""
    return tuple(f for _, f, _, _ in string.Formatter().parse(self.template) if f)

  def prefix(self, num_shots: int) -> str:
    """The text of the first `num_shots` worked examples, ending with the separator.

    Args:
      num_shots: how many examples (at most len(examples)).

    Returns:
      "" for 0 shots, else the examples joined and followed by the separator.
    """
    if not 0 <= num_shots <= len(self.examples):
      raise ValueError(f"prompt {self.name!r} has {len(self.examples)} examples, asked for "
                       f"{num_shots}")
    return "".join(self.template.format(**ex) + ex["solution"] + self.separator
                   for ex in self.examples[:num_shots])

  def format(self, problem: Mapping[str, str], num_shots: int) -> str:
    """The full prompt for one problem.

    Args:
      problem: values for the template's fields.
      num_shots: how many worked examples go first.

    Returns:
      few-shot prefix + the template filled with the problem.
    """
    return self.prefix(num_shots) + self.template.format(**{f: problem[f] for f in self.fields})

  def truncate(self, completion: str) -> str:
    """Cuts a completion at the first stop string (a base model's run-on into a new example)."""
    cut = min([i for i in (completion.find(s) for s in self.stop) if i >= 0],
              default=len(completion))
    return completion[:cut]


def load(name_or_path: str) -> PromptSet:
  """Loads and checks a prompt file.

  Args:
    name_or_path: a builtin name (see `BUILTIN`) or the path of a prompt JSON file.

  Returns:
    The prompt set.

  Raises:
    FileNotFoundError: neither a builtin name nor an existing file.
    ValueError: the file is not a valid prompt file (the message names the file and the problem).
  """
  path = _DIR / f"{name_or_path}.json" if name_or_path in BUILTIN else epath.Path(name_or_path)
  if not path.exists():
    raise FileNotFoundError(f"few-shot prompt {name_or_path!r} not found: expected one of "
                            f"{BUILTIN} or the path of a prompt JSON file")
  try:
    d = json.loads(path.read_text(encoding="utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f"{path}: not a UTF-8 JSON prompt file: {e}") from e
  for key, kind in (("template", str), ("separator", str), ("stop", list), ("examples", list)):
    if not isinstance(d.get(key), kind):
      raise ValueError(f"{path}: field {key!r} must be a {kind.__name__}")
  prompt = PromptSet(name=path.stem, template=d["template"], separator=d["separator"],
                     stop=tuple(d["stop"]), examples=tuple(d["examples"]))
  if not prompt.fields:
    raise ValueError(f"{path}: the template has no {{field}} placeholder for the problem")
  for i, ex in enumerate(prompt.examples):
    missing = [f for f in (*prompt.fields, "solution") if not isinstance(ex.get(f), str)]
    if missing:
      raise ValueError(f"{path}: example {i} lacks string field(s) {missing}")
  return prompt
