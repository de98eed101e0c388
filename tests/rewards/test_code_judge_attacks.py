"""Attacks on the code judge's verdict channel, its time bound and its isolation, on every backend.

Every attack is a completion of `add(a, b)` (or of an APPS problem) that is *wrong* unless an
attack works: a forged report, a read of the host, a leftover from an earlier sample. Each must
score 0, finish within its time budget + 2 s with every process it started gone at verdict time,
and leave the host untouched. The forging attacks use the raw syscalls on x86_64 (pidfd_open
434, pidfd_getfd 438, pidfd_send_signal 424, kcmp 312, process_madvise 440).
"""

import os
import platform
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from restem_jax.rewards import code, sandbox

BACKENDS = [b for b in ("bwrap", "unshare") if sandbox.probe(b) is None]
TIMEOUT_S = 1.0  # each sample's budget: humaneval_timeout_s, or test_timeout_s per APPS test
pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="x86_64 syscall numbers")

ADD = {
    "task_id": "attack/add", "entry_point": "add",
    "prompt": 'def add(a: int, b: int) -> int:\n    """Return a + b."""\n',
    "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n"
            "    assert candidate(10, -3) == 7\n",
}
# A check whose calls run inside map(): a StopIteration from the candidate would end the
# iteration early, as if every later test had passed.
ADD_MAPPED = dict(ADD, test="def check(candidate):\n    assert all(map(lambda ab: candidate(*ab) "
                            "== sum(ab), [(1, 2), (10, -3), (5, 5)]))\n")
ADD_CALL = {"input_output": {"inputs": [[1, 2], [10, -3]], "outputs": [[3], [7]],
                             "fn_name": "add"}}
ADD_STDIO = {"input_output": {"inputs": ["1 2\n", "10 -3\n"], "outputs": ["3\n", "7\n"]}}


def body(src: str) -> str:
  return textwrap.indent(textwrap.dedent(src), "    ")


# Shared by the forging attacks: well-formed "passed" reports as the harness writes them (with
# a made-up tag, or none as before tags existed), sprayed on a file descriptor.
FORGE = """
import ctypes, os, sys, signal
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
enc = sys.modules['__main__'].encode_value
def frames(tag):
    return [enc(record) + tag for record in ({'test': 0, 'status': 'passed', 'calls': 2},
                                              {'done': True})]
def spray(fd, tag=b''):
    for data in frames(tag):
        try:
            os.write(fd, len(data).to_bytes(4, 'big') + data)
        except OSError:
            pass
def pids():
    return sorted({1, 2, 3, 4, os.getppid()} - {os.getpid()})
"""


# Module-level code that replaces the reply encoder of the candidate's process with one that sends a set/dict/frozenset
# (tag %s) of 120k distinct ints equal modulo 2**61 - 1, so all with one hash.
BOMB = """
import sys
main = sys.modules['__main__']
n, m = 120000, (1 << 61) - 1
items = b''.join(b'i%%d;' %% (1 + i * m) for i in range(n))
kind = '%s'
payload = (b'd%%d:' %% n + b''.join(b'i%%d;N' %% (1 + i * m) for i in range(n))) if kind == 'd' \\
    else kind.encode() + b'%%d:' %% n + items
main.encode_value = lambda record, _real=main.encode_value: (
    b'd1:s5:value' + payload if 'value' in record else _real(record))
"""


def forge(src: str) -> str:
  return body(FORGE + textwrap.dedent(src) + "\nreturn -1\n")


def attacks(canary: str, marker: str) -> dict:
  """name -> (problem, completion)."""
  daemon = f"os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', " \
           f"'{marker}'])"
  return {
      # --- reaching the verdict channel
      "pidfd_getfd harness stdout": (ADD, forge("""
          for pid in pids():
              pfd = libc.syscall(434, pid, 0)
              for target in range(0, 16):
                  fd = libc.syscall(438, pfd, target, 0) if pfd >= 0 else -1
                  if fd >= 0:
                      spray(fd)
          """)),
      "pidfd_getfd read the job pipe for the key": (ADD, forge("""
          for pid in pids():
              pfd = libc.syscall(434, pid, 0)
              fd = libc.syscall(438, pfd, 0, 0) if pfd >= 0 else -1
              if fd >= 0:
                  os.set_blocking(fd, False)
                  try:
                      if os.read(fd, 1 << 20):
                          return a + b
                  except OSError:
                      pass
          """)),
      "pidfd_getfd with made-up tags": (ADD, forge("""
          import random
          for pid in pids():
              pfd = libc.syscall(434, pid, 0)
              fd = libc.syscall(438, pfd, 1, 0) if pfd >= 0 else -1
              if fd >= 0:
                  spray(fd, random.randbytes(32))
          """)),
      "pidfd_send_signal SIGSTOP harness": (ADD, forge("""
          for pid in pids():
              pfd = libc.syscall(434, pid, 0)
              if pfd >= 0:
                  libc.syscall(424, pfd, signal.SIGSTOP, 0, 0)
          """)),
      "pidfd_send_signal SIGKILL init": (ADD, forge("""
          pfd = libc.syscall(434, 1, 0)
          if pfd >= 0 and libc.syscall(424, pfd, signal.SIGKILL, 0, 0) == 0:
              return a + b
          """)),
      "kcmp finds the report pipe": (ADD, forge("""
          for pid in pids():
              for fd in range(3):
                  if libc.syscall(312, os.getpid(), pid, 0, 1, fd) >= 0:
                      return a + b
          """)),
      "process_madvise on the harness": (ADD, forge("""
          pfd = libc.syscall(434, os.getppid(), 0)
          iov = (ctypes.c_char * 4096)()
          if libc.syscall(440, max(pfd, 0), ctypes.addressof(iov), 1, 8, 0) >= 0:
              return a + b
          """)),
      "ptrace seize the harness": (ADD, forge("""
          for pid in pids():
              if libc.ptrace(0x4206, pid, 0, 0) == 0:
                  return a + b
          """)),
      "process_vm_writev into the harness": (ADD, forge("""
          class Iov(ctypes.Structure):
              _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]
          buf = ctypes.create_string_buffer(8)
          local, remote = Iov(ctypes.addressof(buf), 8), Iov(0x400000, 8)
          if libc.syscall(311, os.getppid(), ctypes.byref(local), 1, ctypes.byref(remote),
                          1, 0) >= 0:
              return a + b
          """)),
      "/proc fd and mem of the harness": (ADD, forge("""
          libc.mount(b'proc', b'/tmp', b'proc', 0, None)
          for root in ('/proc', '/tmp'):
              for pid in pids():
                  for name in ('fd/1', 'fd/0', 'mem'):
                      try:
                          fd = os.open('%s/%d/%s' % (root, pid, name), os.O_RDWR)
                      except OSError:
                          continue
                      spray(fd)
                      return a + b
          """)),
      "new user namespace to mount proc": (ADD, forge("""
          if libc.unshare(0x10000000 | 0x20000) == 0:
              return a + b
          if libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0) >= 0:  # clone(CLONE_NEWUSER)
              return a + b
          """)),
      "spray every inherited fd": (ADD, forge("""
          for fd in range(0, 256):
              spray(fd)
          """)),
      "read every inherited fd for the key": (ADD, forge("""
          for fd in range(0, 256):
              try:
                  os.set_blocking(fd, False)
                  if b'key' in os.read(fd, 1 << 20):
                      return a + b
              except OSError:
                  pass
          """)),
      "SIGSTOP the harness": (ADD, forge("""
          for pid in pids():
              try:
                  os.kill(pid, signal.SIGSTOP)
              except OSError:
                  pass
          """)),
      "SIGKILL everything": (ADD, forge("""
          for target in (-1, 0, 1, os.getppid(), -os.getppid()):
              try:
                  os.kill(target, signal.SIGKILL)
              except OSError:
                  pass
          """)),
      "join the harness's process group and stall": (ADD, forge("""
          try:
              os.setpgid(0, os.getpgid(os.getppid()))
          except OSError:
              pass
          if os.fork() == 0:
              try:
                  os.setpgid(0, 1)
              except OSError:
                  pass
              while True:
                  pass
          import time
          time.sleep(60)
          """)),
      "setsid daemon that outlives the sample": (ADD, body(f"""
          import os, sys
          if os.fork() == 0:
              try:
                  os.setsid()
              except OSError:
                  pass
              if os.fork() == 0:
                  {daemon}
              os._exit(0)
          return -1
          """)),
      "fork bomb": (ADD, body("import os\nwhile True:\n    try:\n        os.fork()\n"
                              "    except OSError:\n        pass\n")),
      "close every fd and spin": (ADD, body("import os\nos.closerange(0, 1 << 16)\n"
                                            "while True:\n    pass\n")),
      "sleep in C": (ADD, body("import time\ntime.sleep(100)\n")),
      "block reading a pipe in C": (ADD, body("import os\nr, w = os.pipe()\nos.read(r, 1)\n")),
      "ignore signals and spin": (ADD, body("""
          import signal
          for s in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM, signal.SIGHUP, signal.SIGXCPU):
              signal.signal(s, signal.SIG_IGN)
          while True:
              pass
          """)),
      "StopIteration ends the check's map early": (ADD_MAPPED, body("""
          calls = globals().setdefault('calls', [])
          calls.append(1)
          if len(calls) == 1:
              return a + b
          raise StopIteration
          """)),
      "StopAsyncIteration and friends": (ADD_MAPPED, body("""
          calls = globals().setdefault('calls', [])
          calls.append(1)
          if len(calls) == 1:
              return a + b
          raise StopAsyncIteration
          """)),
      # --- costing the judge time
      # The reply is written by the candidate's own process: it can send any bytes, e.g. a set
      # whose 120k elements share one hash (building it costs the receiver O(n^2) in C).
      "equal-hash set decode bomb": (ADD, "    return 0\n" + BOMB % "S"),
      "equal-hash dict decode bomb": (ADD, "    return 0\n" + BOMB % "d"),
      "equal-hash frozenset to the judge (call-based)": (
          ADD_CALL, "def add(a, b):\n    return 0\n" + BOMB % "Z"),
      "deeply nested return value": (ADD, body("""
          x = []
          for _ in range(100000):
              x = [x]
          return x
          """)),
      "huge return value": (ADD, body("return 'x' * (64 << 20)\n")),
      "output flood on stdout": (ADD_STDIO,
                                 "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n"),
      "stderr flood": (ADD_STDIO, "import sys\nwhile True:\n    sys.stderr.write('x' * 65536)\n"),
      "stop the stdio test runner": (ADD_STDIO, textwrap.dedent("""
          import os, signal, time
          for pid in (1, 2, os.getppid()):
              try:
                  os.kill(pid, signal.SIGSTOP)
              except OSError:
                  pass
          time.sleep(60)
          """)),
      "background process keeps the pipes open": (ADD_STDIO, textwrap.dedent("""
          import os, time
          if os.fork() == 0:
              time.sleep(60)
          print(-1)
          """)),
      # --- escapes
      "read a host file": (ADD, body(f"""
          for path in [{canary!r}, '/etc/shadow', '/root/.bash_history']:
              try:
                  open(path).read()
                  return a + b
              except OSError:
                  pass
          return -1
          """)),
      "write outside /tmp": (ADD, body(f"""
          for path in [{canary!r}, '/usr/.restem_attack', '/etc/restem_attack', '/dev/x']:
              try:
                  open(path, 'w').write('pwned')
                  return a + b
              except OSError:
                  pass
          return -1
          """)),
      "network": (ADD, body("""
          import socket
          for host in ['127.0.0.1', '10.0.2.2', '1.1.1.1']:
              try:
                  socket.create_connection((host, 22), timeout=0.3)
                  return a + b
              except OSError:
                  pass
          return -1
          """)),
      "AF_VSOCK socket (vsock ignores network namespaces: a way to a VM's host)": (ADD, body("""
          import socket
          try:
              socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM).close()  # never connected
              return a + b
          except OSError:
              return -1
          """)),
      "fill /tmp": (ADD, body("""
          with open('/tmp/fill', 'wb') as f:
              while True:
                  f.write(bytes(1 << 20))
          """)),
  }


def _processes_with(text: str) -> list[int]:
  found = []
  for pid in os.listdir("/proc"):
    if pid.isdigit():
      try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
          if text.encode() in f.read():
            found.append(int(pid))
      except OSError:
        pass
  return found


def _ppid(pid: int) -> int:
  try:
    with open(f"/proc/{pid}/stat") as f:
      return int(f.read().rsplit(")", 1)[1].split()[1])
  except OSError:
    return 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_attacks_score_zero_in_bounded_time_and_leave_nothing(backend, tmp_path):
  canary = tmp_path / "canary.txt"
  canary.write_text("judge secret")
  marker = f"restem-attack-{os.getpid()}-{backend}"
  config = code.JudgeConfig(backend=backend, humaneval_timeout_s=TIMEOUT_S,
                            test_timeout_s=TIMEOUT_S / 2)
  he, apps = code.CodeReward("humaneval", config), code.CodeReward("apps", config)
  cases = attacks(str(canary), marker)
  for r in (he, apps):  # warm: a container each, as in a long E-step
    assert r(ADD if r is he else ADD_STDIO,
             "    return a + b\n" if r is he else "print(sum(map(int, input().split())))").passed

  def judge(item):
    name, (problem, completion) = item
    start = time.monotonic()
    verdict = (apps if "input_output" in problem else he)(problem, completion)
    elapsed = time.monotonic() - start
    return name, verdict, elapsed, _processes_with(marker)

  with ThreadPoolExecutor(2) as pool:
    results = list(pool.map(judge, cases.items()))
  rewarded = [(name, v.reason) for name, v, _, _ in results if v.passed]
  slow = [(name, round(t, 2)) for name, _, t, _ in results if t > TIMEOUT_S + 2.0]
  left = [(name, pids) for name, _, _, pids in results if pids]
  assert rewarded == [] and slow == [] and left == [], (rewarded, slow, left)
  assert all(v.isolation == backend for _, v, _, _ in results)
  assert canary.read_text() == "judge secret"
  assert not os.path.exists("/usr/.restem_attack") and not os.path.exists("/etc/restem_attack")
  # The judges still work, and closing them leaves no process of theirs.
  assert he(ADD, "    return a + b\n").passed
  for r in (he, apps):
    containers = r.judge._idle  # pylint: disable=protected-access
    own = set().union(*(c.pids() for c in containers))
    others = set(_processes_with(r.judge.tag)) - own
    # No sample process outlives its verdict: besides its own, a container holds only the two
    # processes it prepared for its next sample (S, and S's child, the candidate side).
    assert len(others) <= 2 * len(containers), others
    assert all(_ppid(pid) in {c.pid for c in containers} or _ppid(_ppid(pid)) in
               {c.pid for c in containers} for pid in others)
    r.judge.close()
    assert _processes_with(r.judge.tag) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_nothing_of_one_sample_reaches_the_next(backend):
  """Samples share a container: a file, a process or a fork bomb of one is gone for the next."""
  config = code.JudgeConfig(backend=backend, humaneval_timeout_s=TIMEOUT_S)
  with code.CodeJudge(config) as judge:
    first = judge.judge_humaneval(ADD, body("""
        import os, time
        open('/tmp/left-behind', 'w').write('x')
        if os.fork() == 0:
            while True:
                try:
                    os.fork()
                except OSError:
                    time.sleep(0.01)
        time.sleep(60)
        """))
    assert not first.passed
    # Right only if it sees nothing of the first sample and can still start processes.
    second = judge.judge_humaneval(ADD, body("""
        import os
        if os.path.exists('/tmp/left-behind'):
            return -1
        pids = []
        for _ in range(16):
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            pids.append(pid)
        for pid in pids:
            os.waitpid(pid, 0)
        return a + b
        """))
    assert second.passed, second.reason


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_stdio_runner_is_out_of_a_programs_reach(backend):
  """The stdio test runner (the init of the program's pid namespace) is visible to the
  program, which must not be able to end it or change its limits: neither by a signal that
  fcntl(F_SETOWN) aims at it (no seccomp rule sees that) nor by prlimit on its pid. Right only
  if the runner survives to run the next tests."""
  program = textwrap.dedent("""
      import fcntl, os, resource, time
      for sig in (2, 10, 12, 14, 15, 29):  # SIGINT, SIGUSR1/2, SIGALRM, SIGTERM, SIGIO
          r, w = os.pipe()
          fcntl.fcntl(r, fcntl.F_SETOWN, 1)
          fcntl.fcntl(r, 10, sig)  # F_SETSIG
          fcntl.fcntl(r, fcntl.F_SETFL, os.O_ASYNC | os.O_NONBLOCK)
          os.write(w, b'x')
      for limit in (resource.RLIMIT_NOFILE, resource.RLIMIT_NPROC, resource.RLIMIT_CPU,
                    resource.RLIMIT_AS):
          try:
              resource.prlimit(1, limit, (1, 1))
          except OSError:
              pass
      time.sleep(0.05)
      print(sum(map(int, input().split())))
      """)
  problem = {"input_output": {"inputs": ["1 2\n", "10 -3\n", "5 5\n"],
                              "outputs": ["3\n", "7\n", "10\n"]}}
  config = code.JudgeConfig(backend=backend, test_timeout_s=2.0)
  with code.CodeJudge(config) as judge:
    verdict = judge.judge_apps(problem, program)
  assert verdict.passed, verdict.reason


# A stand-in for the harness that knows the sample's key and writes the given records, to check
# the judge's side of the protocol: only authenticated records, each once, in order, then the
# end marker, and nothing after it.
_FAKE_HARNESS = '''
import hmac, hashlib, marshal, os

def _read(n):
    data = b""
    while len(data) < n:
        chunk = os.read(0, n - len(data))
        if not chunk:
            raise EOFError()
        data += chunk
    return data

def _frame():
    return _read(int.from_bytes(_read(4), "big"))

def main():
    job = marshal.loads(_frame())
    key = marshal.loads(_frame())["key"]
    script = job["program"].split("#script:")[1].strip()
    passed, done = {"test": 0, "status": "passed", "calls": 2}, {"done": True}
    records = {
        "honest": [(0, passed), (1, done)],
        "extra after the end": [(0, passed), (1, done), (2, passed)],
        "duplicate": [(0, passed), (1, passed), (2, done)],
        "replayed index": [(0, passed), (0, done)],
        "skipped index": [(1, passed), (2, done)],
        "bad tag": [(0, passed), (1, done), "bad"],
        "no tag": [None],
        "no end marker": [(0, passed)],
    }[script]
    out = b""
    for item in records:
        if item == "bad":
            out = out[:-1] + bytes([out[-1] ^ 1])
            continue
        if item is None:
            data = encode_value(passed) + encode_value(done)
        else:
            index, record = item
            body = encode_value(record)
            data = body + hmac.new(key, index.to_bytes(8, "big") + body, hashlib.sha256).digest()
        out += len(data).to_bytes(4, "big") + data
    os.write(1, out)
'''


@pytest.mark.skipif(not BACKENDS, reason="no OS sandbox")
@pytest.mark.parametrize("script, passes", [
    ("honest", True), ("extra after the end", False), ("duplicate", False),
    ("replayed index", False), ("skipped index", False), ("bad tag", False),
    ("no tag", False), ("no end marker", False)])
def test_the_judge_accepts_only_authenticated_records_in_order(script, passes, monkeypatch):
  from restem_jax.rewards import _values
  with open(_values.__file__, encoding="utf-8") as f:
    source = f.read() + "\n" + _FAKE_HARNESS
  monkeypatch.setattr(code, "_harness_source", lambda: source)
  with code.CodeJudge(code.JudgeConfig(backend=BACKENDS[0], humaneval_timeout_s=TIMEOUT_S)) as j:
    verdict = j.judge_humaneval(ADD, f"    return a + b\n#script: {script}\n")
  assert verdict.passed is passes, verdict.reason
