"""The code that runs first inside a sandbox container and serves one sample at a time.

`sandbox.py` compiles this file followed by a program (e.g. `_harness.py`, which must define
`main()`) into one code object, with the sandbox's own interpreter, and starts a *container*:
`python -I -S -B -X utf8 -c BOOTSTRAP CODE CONFIG` under bwrap or unshare (see `sandbox.py`).
`_sbx_serve(main, prepare)` at the end of that code object then:
  1. for the `unshare` backend (root in fresh user, mount, pid, net, ipc and uts namespaces):
     builds a new root from read-only binds of the system directories and a few devices and
     chroots into it (bwrap builds the same view itself); imports the modules named in CONFIG
     once; makes itself non-dumpable;
  2. prepares a process S for the next sample (`_sbx_prefork`): S enters fresh mount and ipc
     namespaces and a fresh pid namespace for its children, mounts a private size-limited
     tmpfs at /tmp, keeps only /dev/null as fds 0-2 and its hand-off socket, drops every
     capability for good, installs the seccomp filter, stays non-dumpable, sets the resource
     limits, calls `prepare()` (the harness forks the candidate side there, the first process
     of the new pid namespace) and reports the pids it prepared;
  3. says b"ready" on fd 0, a unix SOCK_SEQPACKET socket to the judge, then for every request
     (a marshalled dict with `kill_after_s`, plus two fds passed with SCM_RIGHTS: the sample's
     job pipe and its report pipe) hands the fds to the prepared S (which makes them its fds 0
     and 1 and calls `main()`), prepares the next S while this sample runs, and waits for S.
     When S exits, or `kill_after_s` seconds after the hand-off, it SIGKILLs S and the
     candidate side (by pidfd); the kernel kills every other process of the sample with the
     candidate side, the init of their pid namespace; it reaps them, and only then answers
     b"exit <code>" (250: killed at the deadline, 251: no S could take the sample).
Samples run one after another, each in its own namespaces with its own /tmp: nothing a sample
leaves (files, processes, SysV IPC, sockets) exists when the next one starts, and no process of
a sample can see the next sample's S (it is outside their pid namespace). The container holds
capabilities only in its own user namespace; a sample has none.

The seccomp filter (`_sbx_seccomp`) denies every way to reach into another process (ptrace,
process_vm_*, pidfd_open/getfd/send_signal, kcmp, process_madvise/mrelease), to leave or build
namespaces and mounts (unshare, setns, clone with namespace flags, clone3, mount calls, chroot),
and other kernel attack surface (bpf, perf_event_open, userfaultfd, io_uring, keyrings,
open_by_handle_at, sockets of families the network namespace does not contain, e.g. AF_VSOCK).
`_sbx_candidate_seccomp()` adds, for the model's processes: no setpgid/setsid, signals only to
its own process group or to processes no older than itself (pids only grow in a fresh pid
namespace), and prlimit64 only on itself, so e.g. the stdio test runner is out of reach (which
also ignores the signals it would handle: see `_harness.py`).

Stdlib only, and no syntax newer than Python 3.8: it runs under whichever system interpreter the
sandbox uses. Names start with `_sbx_` so the program that follows does not clash with them.
"""

import marshal as _sbx_marshal
import os as _sbx_os
import platform as _sbx_platform
import resource as _sbx_resource
import select as _sbx_select
import signal as _sbx_signal
import socket as _sbx_socket
import struct as _sbx_struct
import sys as _sbx_sys
import time as _sbx_time
import ctypes as _sbx_ctypes

_SBX_LIBC = _sbx_ctypes.CDLL(None, use_errno=True)
_SBX_MS_RDONLY, _SBX_MS_NOSUID, _SBX_MS_NODEV = 1, 2, 4
_SBX_MS_REMOUNT, _SBX_MS_BIND, _SBX_MS_REC, _SBX_MS_PRIVATE = 32, 4096, 16384, 1 << 18
_SBX_PR_SET_PDEATHSIG, _SBX_PR_SET_DUMPABLE, _SBX_PR_CAPBSET_DROP = 1, 4, 24
_SBX_PR_SET_SECUREBITS, _SBX_PR_SET_NO_NEW_PRIVS, _SBX_PR_SET_SECCOMP = 28, 38, 22
_SBX_PR_CAP_AMBIENT, _SBX_PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
_SBX_CLONE_NEWNS, _SBX_CLONE_NEWCGROUP, _SBX_CLONE_NEWUTS = 0x20000, 0x02000000, 0x04000000
_SBX_CLONE_NEWIPC, _SBX_CLONE_NEWUSER = 0x08000000, 0x10000000
_SBX_CLONE_NEWPID, _SBX_CLONE_NEWNET = 0x20000000, 0x40000000
_SBX_NS_FLAGS = (_SBX_CLONE_NEWNS | _SBX_CLONE_NEWCGROUP | _SBX_CLONE_NEWUTS | _SBX_CLONE_NEWIPC
                 | _SBX_CLONE_NEWUSER | _SBX_CLONE_NEWPID | _SBX_CLONE_NEWNET)
# SECBIT_NOROOT, NO_SETUID_FIXUP, KEEP_CAPS_LOCKED, NO_CAP_AMBIENT_RAISE and their locks: uid 0
# in the namespace never regains capabilities, not even by exec'ing a program.
_SBX_SECUREBITS = 0b11101111
_SBX_NEW_ROOT = "/tmp"  # mount point of the new root; hides the host's /tmp in our namespace only
_SBX_KILLED_AT_DEADLINE, _SBX_NOT_STARTED = 250, 251  # see sandbox.py
# Set in S: whether its children start in a fresh pid namespace (all backends but "none").
_SBX_STATE = {"namespaced": False}

# System call numbers: (audit arch, {name: number}) per machine.
_SBX_SYSCALLS = {
    "x86_64": (0xC000003E, {
        "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "pidfd_open": 434,
        "pidfd_getfd": 438, "pidfd_send_signal": 424, "kcmp": 312, "process_madvise": 440,
        "process_mrelease": 448, "unshare": 272, "setns": 308, "mount": 165, "umount2": 166,
        "pivot_root": 155, "chroot": 161, "open_tree": 428, "move_mount": 429, "fsopen": 430,
        "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
        "open_by_handle_at": 304, "name_to_handle_at": 303, "bpf": 321, "perf_event_open": 298,
        "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
        "io_uring_register": 427, "keyctl": 250, "add_key": 248, "request_key": 249,
        "clone": 56, "clone3": 435, "setpgid": 109, "setsid": 112, "kill": 62, "tkill": 200,
        "tgkill": 234, "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297, "prlimit64": 302,
        "socket": 41}),
    "aarch64": (0xC00000B7, {
        "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "pidfd_open": 434,
        "pidfd_getfd": 438, "pidfd_send_signal": 424, "kcmp": 272, "process_madvise": 440,
        "process_mrelease": 448, "unshare": 97, "setns": 268, "mount": 40, "umount2": 39,
        "pivot_root": 41, "chroot": 51, "open_tree": 428, "move_mount": 429, "fsopen": 430,
        "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
        "open_by_handle_at": 265, "name_to_handle_at": 264, "bpf": 280, "perf_event_open": 241,
        "userfaultfd": 282, "io_uring_setup": 425, "io_uring_enter": 426,
        "io_uring_register": 427, "keyctl": 219, "add_key": 217, "request_key": 218,
        "clone": 220, "clone3": 435, "setpgid": 154, "setsid": 157, "kill": 129, "tkill": 130,
        "tgkill": 131, "rt_sigqueueinfo": 138, "rt_tgsigqueueinfo": 240, "prlimit64": 261,
        "socket": 198}),
}
_SBX_DENIED = ("ptrace", "process_vm_readv", "process_vm_writev", "pidfd_open", "pidfd_getfd",
               "pidfd_send_signal", "kcmp", "process_madvise", "process_mrelease", "unshare",
               "setns", "mount", "umount2", "pivot_root", "chroot", "open_tree", "move_mount",
               "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "open_by_handle_at",
               "name_to_handle_at", "bpf", "perf_event_open", "userfaultfd", "io_uring_setup",
               "io_uring_enter", "io_uring_register", "keyctl", "add_key", "request_key")
_SBX_SOCKET_FAMILIES = (1, 2, 10, 16)  # AF_UNIX, AF_INET, AF_INET6, AF_NETLINK
_SBX_SIGNALS = ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")
# BPF opcodes: LD|W|ABS, JMP|JEQ|K, JMP|JGE|K, JMP|JGT|K, JMP|JSET|K, RET|K.
_SBX_LD, _SBX_JEQ, _SBX_JGE, _SBX_JGT, _SBX_JSET, _SBX_RET = 0x20, 0x15, 0x35, 0x25, 0x45, 0x06
_SBX_ALLOW, _SBX_EPERM, _SBX_ENOSYS, _SBX_KILL = 0x7FFF0000, 0x00050001, 0x00050026, 0x80000000


def _sbx_check(result, what):
  if result != 0:
    errno = _sbx_ctypes.get_errno()
    raise OSError(errno, "sandbox setup: %s: %s" % (what, _sbx_os.strerror(errno)))


def _sbx_prctl(option, value, what):
  _sbx_check(_SBX_LIBC.prctl(option, _sbx_ctypes.c_ulong(value), 0, 0, 0), what)


# ----------------------------------------------------------------------------- seccomp


def _sbx_filter(rules):
  """A seccomp program: arch check, then rules, then allow. rules: list of instruction lists,
  each starting with the syscall number already in A and ending with a return or falling
  through with A reloaded (see the callers)."""
  arch, _ = _SBX_SYSCALLS[_sbx_platform.machine()]
  program = [(_SBX_LD, 0, 0, 4), (_SBX_JEQ, 1, 0, arch), (_SBX_RET, 0, 0, _SBX_KILL),
             (_SBX_LD, 0, 0, 0)]
  if _sbx_platform.machine() == "x86_64":  # the x32 ABI numbers the same calls differently
    program += [(_SBX_JGE, 0, 1, 0x40000000), (_SBX_RET, 0, 0, _SBX_EPERM)]
  for rule in rules:
    program += rule
  program.append((_SBX_RET, 0, 0, _SBX_ALLOW))
  return b"".join(_sbx_struct.pack("=HBBI", *insn) for insn in program)


def _sbx_base_rules():
  _, nr = _SBX_SYSCALLS[_sbx_platform.machine()]
  rules = [[(_SBX_JEQ, 0, 1, nr[name]), (_SBX_RET, 0, 0, _SBX_EPERM)] for name in _SBX_DENIED]
  # clone3 passes its flags in memory the filter cannot read: ENOSYS makes libc use clone.
  rules.append([(_SBX_JEQ, 0, 1, nr["clone3"]), (_SBX_RET, 0, 0, _SBX_ENOSYS)])
  # clone with any namespace flag (args[0], low word: offset 16 on little-endian machines).
  rules.append([(_SBX_JEQ, 0, 4, nr["clone"]), (_SBX_LD, 0, 0, 16),
                (_SBX_JSET, 0, 1, _SBX_NS_FLAGS), (_SBX_RET, 0, 0, _SBX_EPERM),
                (_SBX_LD, 0, 0, 0)])
  # Sockets only of the families the network namespace contains: AF_VSOCK (to a VM's host),
  # for one, ignores it.
  n = len(_SBX_SOCKET_FAMILIES)  # the n checks jump to the reload at the end; else EPERM
  rules.append([(_SBX_JEQ, 0, n + 2, nr["socket"]), (_SBX_LD, 0, 0, 16)]
               + [(_SBX_JEQ, n - i, 0, family) for i, family in enumerate(_SBX_SOCKET_FAMILIES)]
               + [(_SBX_RET, 0, 0, _SBX_EPERM), (_SBX_LD, 0, 0, 0)])
  return rules


def _sbx_candidate_rules(own_pid):
  """No setpgid/setsid; signals only to pid 0 (own group), pids >= own_pid, or groups -pgid with
  pgid >= own_pid; prlimit64 only on itself."""
  _, nr = _SBX_SYSCALLS[_sbx_platform.machine()]
  rules = [[(_SBX_JEQ, 0, 1, nr[name]), (_SBX_RET, 0, 0, _SBX_EPERM)]
           for name in ("setpgid", "setsid")]
  negative_limit = (1 << 32) - own_pid  # -own_pid as an unsigned 32-bit word
  for name in _SBX_SIGNALS:
    rules.append([
        (_SBX_JEQ, 0, 8, nr[name]),
        (_SBX_LD, 0, 0, 16),                      # target pid, low word
        (_SBX_JEQ, 5, 0, 0),                      # 0: own process group -> allow
        (_SBX_JGE, 0, 2, 0x80000000),             # negative?
        (_SBX_JGT, 2, 3, negative_limit),         # -x with x < own_pid -> deny, else allow
        (_SBX_RET, 0, 0, _SBX_EPERM),             # (unreachable filler keeps offsets simple)
        (_SBX_JGE, 1, 0, own_pid),                # positive: >= own_pid -> allow
        (_SBX_RET, 0, 0, _SBX_EPERM),
        (_SBX_LD, 0, 0, 0)])                      # allowed: reload the number, continue
  # prlimit64 on its own process only (pid 0): not on the stdio runner, which it can see.
  rules.append([(_SBX_JEQ, 0, 3, nr["prlimit64"]), (_SBX_LD, 0, 0, 16), (_SBX_JEQ, 1, 0, 0),
                (_SBX_RET, 0, 0, _SBX_EPERM), (_SBX_LD, 0, 0, 0)])
  return rules


def _sbx_install(program):
  class Prog(_sbx_ctypes.Structure):
    _fields_ = [("len", _sbx_ctypes.c_ushort), ("filter", _sbx_ctypes.c_char_p)]

  prog = Prog(len(program) // 8, program)
  _sbx_check(_SBX_LIBC.prctl(_SBX_PR_SET_SECCOMP, 2, _sbx_ctypes.byref(prog), 0, 0), "seccomp")


def _sbx_seccomp():
  """Installs the sample filter in this process (inherited by its children); False if this
  machine has no syscall table here."""
  if _sbx_platform.machine() not in _SBX_SYSCALLS:
    return False
  _sbx_prctl(_SBX_PR_SET_NO_NEW_PRIVS, 1, "no_new_privs")
  _sbx_install(_sbx_filter(_sbx_base_rules()))
  return True


def _sbx_set_subreaper():
  """Orphaned descendants become this process's children (so it can reap them)."""
  _sbx_prctl(36, 1, "child_subreaper")  # PR_SET_CHILD_SUBREAPER


def _sbx_candidate_seccomp():
  """Adds the candidate rules (see the module docstring) for this process and its children."""
  if _sbx_platform.machine() in _SBX_SYSCALLS:
    _sbx_prctl(_SBX_PR_SET_NO_NEW_PRIVS, 1, "no_new_privs")
    _sbx_install(_sbx_filter(_sbx_candidate_rules(_sbx_os.getpid())))


# ----------------------------------------------------------------------------- file system


def _sbx_mount(source, target, fstype, flags, data=None):
  enc = lambda s: None if s is None else s.encode()  # noqa: E731
  _sbx_check(_SBX_LIBC.mount(enc(source), enc(target), enc(fstype), _sbx_ctypes.c_ulong(flags),
                             enc(data)), "mount %s" % target)


def _sbx_build_root(ro_paths, tmpfs_bytes):
  """unshare backend: the new root: read-only system directories, /tmp and a few devices."""
  root = _SBX_NEW_ROOT
  _sbx_mount(None, "/", None, _SBX_MS_REC | _SBX_MS_PRIVATE)
  _sbx_mount("tmpfs", root, "tmpfs", _SBX_MS_NOSUID | _SBX_MS_NODEV, "size=1m,mode=0755")
  for path in ro_paths:
    target = root + path
    if _sbx_os.path.islink(path):
      _sbx_os.makedirs(_sbx_os.path.dirname(target), exist_ok=True)
      _sbx_os.symlink(_sbx_os.readlink(path), target)
    elif _sbx_os.path.isdir(path):
      _sbx_os.makedirs(target, exist_ok=True)
      _sbx_mount(path, target, None, _SBX_MS_BIND | _SBX_MS_REC)
      _sbx_mount(None, target, None, _SBX_MS_BIND | _SBX_MS_REMOUNT | _SBX_MS_RDONLY
                 | _SBX_MS_NOSUID | _SBX_MS_NODEV)
  _sbx_os.makedirs(root + "/dev")
  for name in ("null", "zero", "random", "urandom"):
    open(root + "/dev/" + name, "w").close()
    _sbx_mount("/dev/" + name, root + "/dev/" + name, None, _SBX_MS_BIND)
  _sbx_os.makedirs(root + "/tmp")
  _sbx_mount("tmpfs", root + "/tmp", "tmpfs", _SBX_MS_NOSUID | _SBX_MS_NODEV,
             "size=%d,mode=1777" % tmpfs_bytes)
  _sbx_mount(None, root, None, _SBX_MS_REMOUNT | _SBX_MS_RDONLY | _SBX_MS_NOSUID
             | _SBX_MS_NODEV, "size=1m,mode=0755")
  _sbx_os.chroot(root)
  _sbx_os.chdir("/tmp")


def _sbx_drop_capabilities():
  """Gives up every capability for good, for this process and its children."""
  _sbx_prctl(_SBX_PR_SET_SECUREBITS, _SBX_SECUREBITS, "securebits")
  cap = 0
  while _SBX_LIBC.prctl(_SBX_PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
    cap += 1
  if cap == 0:
    _sbx_check(-1, "drop bounding set")
  _sbx_check(_SBX_LIBC.prctl(_SBX_PR_CAP_AMBIENT, _SBX_PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0),
             "ambient")

  class Header(_sbx_ctypes.Structure):
    _fields_ = [("version", _sbx_ctypes.c_uint32), ("pid", _sbx_ctypes.c_int)]

  class Data(_sbx_ctypes.Structure):
    _fields_ = [("effective", _sbx_ctypes.c_uint32), ("permitted", _sbx_ctypes.c_uint32),
                ("inheritable", _sbx_ctypes.c_uint32)]

  header = Header(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3: two Data words
  _sbx_check(_SBX_LIBC.capset(_sbx_ctypes.byref(header), (Data * 2)()), "capset")


# ----------------------------------------------------------------------------- samples


def _sbx_sample(main, prepare, handoff_fd, config):
  """Process S: isolates itself, calls prepare(), waits for the sample's two fds on handoff_fd,
  then runs main(). Its children start a new pid namespace."""
  code = 1
  try:
    _sbx_prctl(_SBX_PR_SET_PDEATHSIG, 9, "pdeathsig")
    _sbx_os.setsid()
    _SBX_STATE["namespaced"] = config["namespaced"]
    if config["namespaced"]:
      # No new net namespace per sample (it costs ~2 ms): the container's own has no way out (at
      # most a loopback), its samples run one after another, and no socket outlives the
      # processes that hold it (changing the namespace itself needs capabilities).
      _sbx_check(_SBX_LIBC.unshare(_SBX_CLONE_NEWPID | _SBX_CLONE_NEWNS | _SBX_CLONE_NEWIPC),
                 "unshare")
      _sbx_mount(None, "/", None, _SBX_MS_REC | _SBX_MS_PRIVATE)
      _sbx_mount("tmpfs", "/tmp", "tmpfs", _SBX_MS_NOSUID | _SBX_MS_NODEV,
                 "size=%d,mode=1777" % config["tmpfs_bytes"])
      _sbx_os.chdir("/tmp")
    null = _sbx_os.open("/dev/null", _sbx_os.O_RDWR)
    for target in (0, 1, 2):
      _sbx_os.dup2(null, target)
    _sbx_os.dup2(handoff_fd, 3)
    _sbx_os.closerange(4, 1 << 16)
    if config["namespaced"]:
      _sbx_drop_capabilities()
      _sbx_seccomp()
    _sbx_prctl(_SBX_PR_SET_DUMPABLE, 0, "dumpable")
    for name, value in config["rlimits"].items():
      _sbx_resource.setrlimit(getattr(_sbx_resource, name), (value, value))
    # e.g. fork the candidate side now, before any sample data exists here; the container
    # learns the pids it must kill when the sample ends.
    pids = (prepare() if prepare is not None else None) or []
    handoff = _sbx_socket.socket(fileno=3)
    handoff.sendall(("pids" + "".join(" %d" % p for p in pids)).encode())
    _, fds = _sbx_receive(handoff)
    handoff.close()
    if len(fds) != 2:
      raise OSError("no sample fds")
    _sbx_os.dup2(fds[0], 0)
    _sbx_os.dup2(fds[1], 1)
    for fd in fds:
      _sbx_os.close(fd)
    main()
    code = 0
  except BaseException:
    code = 1
  finally:
    _sbx_os._exit(code)


def _sbx_prefork(main, prepare, config):
  """(pid, socket) of a new process S, which isolates and prepares itself for the next sample
  while the container goes on; None if it cannot be forked now (e.g. a sample's fork bomb
  holds every process slot of the container's user)."""
  try:
    ours, theirs = _sbx_socket.socketpair(_sbx_socket.AF_UNIX, _sbx_socket.SOCK_SEQPACKET)
  except OSError:
    return None
  try:
    pid = _sbx_os.fork()
  except OSError:
    ours.close()
    theirs.close()
    return None
  if pid == 0:
    _sbx_sample(main, prepare, theirs.fileno(), config)
  theirs.close()
  return pid, ours


def _sbx_ready(spare):
  """The pids S prepared besides itself, once it is ready; None if it died preparing."""
  pid, handoff = spare
  try:
    message = handoff.recv(4096)
  except OSError:
    message = b""
  words = message.split()
  if not words or words[0] != b"pids" or not all(w.isdigit() for w in words[1:]):
    handoff.close()
    try:
      _sbx_os.kill(pid, 9)
    except OSError:
      pass
    _sbx_os.waitpid(pid, 0)
    return None
  return [int(w) for w in words[1:]]


def _sbx_wait(pid, timeout):
  """Exit status of child pid, or None if it still runs after timeout seconds."""
  deadline = _sbx_time.monotonic() + timeout
  try:
    pidfd = _sbx_os.pidfd_open(pid)
  except (AttributeError, OSError):
    pidfd = None
  try:
    delay = 0.0005
    while True:
      done, status = _sbx_os.waitpid(pid, _sbx_os.WNOHANG)
      if done:
        return status
      remaining = deadline - _sbx_time.monotonic()
      if remaining <= 0:
        return None
      if pidfd is not None:
        _sbx_select.select([pidfd], [], [], remaining)
      else:
        _sbx_time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.005)
  finally:
    if pidfd is not None:
      _sbx_os.close(pidfd)


def _sbx_start_sample(spare, main, prepare, config, fds):
  """Hands the sample's fds to a ready S (the spare, or a fresh one if the spare died).
  Returns (S's pid, [(pid, pidfd or None) of each other process S prepared]) or None if no S
  could take the sample."""
  for attempt in range(2):
    if spare is None:
      spare = _sbx_prefork(main, prepare, config)
      if spare is None:
        return None
    others = _sbx_ready(spare)
    if others is None:
      spare = None
      continue
    doomed = []
    for other in others:  # alive now (S just said so): a pidfd names exactly that process
      try:
        doomed.append((other, _sbx_os.pidfd_open(other)))
      except (AttributeError, OSError):
        doomed.append((other, None))
    pid, handoff = spare
    try:
      handoff.sendmsg([b"go"], [(_sbx_socket.SOL_SOCKET, _sbx_socket.SCM_RIGHTS,
                                 _sbx_struct.pack("2i", *fds))])
    except OSError:
      pass  # S died after saying it was ready: the sample ends without a report
    handoff.close()
    return pid, doomed
  return None


def _sbx_kill(pid, pidfd):
  try:
    if pidfd is not None:
      _sbx_signal.pidfd_send_signal(pidfd, 9)
    else:
      _sbx_os.kill(pid, 9)
  except OSError:
    pass


def _sbx_end_sample(pid, others, kill_after_s, config):
  """Waits for S until the deadline, then kills every process of the sample and returns once
  all are reaped: S itself, and the candidate side, init of the pid namespace all other
  processes of the sample live in (the kernel kills them when it dies). Its exit code (250:
  killed at the deadline)."""
  status = _sbx_wait(pid, kill_after_s)
  if status is None:
    code = _SBX_KILLED_AT_DEADLINE
    _sbx_kill(pid, None)  # our child, not reaped yet: the pid is still S's
    _sbx_os.waitpid(pid, 0)
  elif _sbx_os.WIFEXITED(status):
    code = min(_sbx_os.WEXITSTATUS(status), 249)
  else:
    code = 128 + _sbx_os.WTERMSIG(status)
  for other, pidfd in others:
    _sbx_kill(other, pidfd)
    if not config["namespaced"]:
      try:
        _sbx_os.killpg(other, 9)
      except OSError:
        pass
    # S is gone, so the candidate side is our child now (unless S reaped it). An init is
    # reaped only after every process of its namespace is gone.
    try:
      _sbx_os.waitpid(other, 0)
    except ChildProcessError:
      pass
    if pidfd is not None:
      _sbx_os.close(pidfd)
  return code


def _sbx_receive(sock):
  """(message, fds) of one request; (b"", []) at EOF."""
  fds = []
  size = _sbx_struct.calcsize("i")
  message, ancillary, _, _ = sock.recvmsg(1 << 16, _sbx_socket.CMSG_SPACE(4 * size))
  for level, kind, data in ancillary:
    if level == _sbx_socket.SOL_SOCKET and kind == _sbx_socket.SCM_RIGHTS:
      usable = len(data) - len(data) % size
      fds.extend(_sbx_struct.unpack("%di" % (usable // size), data[:usable]))
  return message, fds


def _sbx_serve(main, prepare=None):
  """The container's loop (see the module docstring). prepare: called in each S before it
  receives its sample (S is forked and prepared while the previous sample's verdict travels)."""
  config = _sbx_marshal.loads(bytes.fromhex(_sbx_sys.argv.pop(1)))
  if config.get("unshare"):
    _sbx_build_root(config["ro_paths"], config["tmpfs_bytes"])
  for name in config.get("preimport", ()):
    try:
      __import__(name)
    except Exception:
      pass
  _sbx_prctl(_SBX_PR_SET_DUMPABLE, 0, "dumpable")
  # Every object so far is shared by all samples' processes: keep the collector from touching
  # (and so copying) their pages in each forked process.
  import gc
  gc.collect()
  gc.freeze()
  sock = _sbx_socket.socket(fileno=0)
  sock.sendall(b"ready")
  spare = _sbx_prefork(main, prepare, config)
  while True:
    message, fds = _sbx_receive(sock)
    if not message:
      return
    if len(fds) != 2:
      for fd in fds:
        _sbx_os.close(fd)
      sock.sendall(b"exit 125")
      continue
    request = _sbx_marshal.loads(message)  # from the judge: trusted
    started = _sbx_start_sample(spare, main, prepare, config, fds)
    for fd in fds:
      _sbx_os.close(fd)
    # The next sample's S prepares itself (namespaces, limits, candidate side) while this one
    # runs: it is forked from us, holds nothing of this sample, and no process of this sample
    # can see it (they live in their own pid namespace).
    spare = _sbx_prefork(main, prepare, config)
    if started is None:
      sock.sendall(b"exit %d" % _SBX_NOT_STARTED)
      continue
    code = _sbx_end_sample(started[0], started[1], request["kill_after_s"], config)
    sock.sendall(b"exit %d" % code)
