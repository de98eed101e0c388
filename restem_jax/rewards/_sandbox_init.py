"""First code to run inside a sandbox, before the program it guards (see `sandbox.py`).

`sandbox.py` compiles this file followed by the program it guards into one code object (with the
sandbox's own interpreter) and runs `python -I -S -B -X utf8 -c BOOTSTRAP CODE CONFIG ARGS...`,
where BOOTSTRAP executes CODE (hex of marshal data). This part takes CONFIG (hex of a marshalled
dict) off argv and then, in this order:
  - for the `unshare` backend (we are root in fresh user, mount, pid, net, ipc and uts
    namespaces): builds a new root from read-only binds of the system directories, a size-limited
    tmpfs at /tmp (the only writable place) and /dev/{null,zero,random,urandom}, chroots into
    it, drops every capability for good (bounding set, securebits, no_new_privs) and makes the
    process non-dumpable (the program's processes, same uid, cannot ptrace it);
  - sets the resource limits (memory, processes, file size, open files, CPU time, no core dumps).
bwrap builds the same file system view itself and `sandbox.py` gives it a seccomp filter that
denies ptrace, so for bwrap only the limits are set here.

Stdlib only, and no syntax newer than Python 3.8: it runs under whichever system interpreter the
sandbox uses. Names start with `_sbx_` so the program that follows does not clash with them.
"""

import marshal as _sbx_marshal
import os as _sbx_os
import resource as _sbx_resource
import sys as _sbx_sys

_SBX_MS_RDONLY, _SBX_MS_NOSUID, _SBX_MS_NODEV = 1, 2, 4
_SBX_MS_REMOUNT, _SBX_MS_BIND, _SBX_MS_REC, _SBX_MS_PRIVATE = 32, 4096, 16384, 1 << 18
_SBX_PR_SET_DUMPABLE, _SBX_PR_CAPBSET_DROP, _SBX_PR_SET_SECUREBITS = 4, 24, 28
_SBX_PR_SET_NO_NEW_PRIVS, _SBX_PR_CAP_AMBIENT, _SBX_PR_CAP_AMBIENT_CLEAR_ALL = 38, 47, 4
# SECBIT_NOROOT, NO_SETUID_FIXUP, KEEP_CAPS_LOCKED, NO_CAP_AMBIENT_RAISE and their locks: uid 0
# in the namespace never regains capabilities, not even by exec'ing a program.
_SBX_SECUREBITS = 0b11101111
_SBX_NEW_ROOT = "/tmp"  # mount point of the new root; hides the host's /tmp in our namespace only


def _sbx_libc():
  global _sbx_ctypes
  import ctypes as _sbx_ctypes  # only the unshare backend needs it (importing costs ~3 ms)
  return _sbx_ctypes.CDLL(None, use_errno=True)


def _sbx_check(result, what):
  if result != 0:
    errno = _sbx_ctypes.get_errno()
    raise OSError(errno, "sandbox setup: %s: %s" % (what, _sbx_os.strerror(errno)))


def _sbx_mount(libc, source, target, fstype, flags, data=None):
  enc = lambda s: None if s is None else s.encode()  # noqa: E731
  _sbx_check(libc.mount(enc(source), enc(target), enc(fstype), _sbx_ctypes.c_ulong(flags),
                        enc(data)), "mount %s" % target)


def _sbx_build_root(libc, ro_paths, tmpfs_bytes):
  """The new root: read-only system directories, a private /tmp and a few devices."""
  root = _SBX_NEW_ROOT
  _sbx_mount(libc, None, "/", None, _SBX_MS_REC | _SBX_MS_PRIVATE)
  _sbx_mount(libc, "tmpfs", root, "tmpfs", _SBX_MS_NOSUID | _SBX_MS_NODEV, "size=1m,mode=0755")
  for path in ro_paths:
    target = root + path
    if _sbx_os.path.islink(path):
      _sbx_os.makedirs(_sbx_os.path.dirname(target), exist_ok=True)
      _sbx_os.symlink(_sbx_os.readlink(path), target)
    elif _sbx_os.path.isdir(path):
      _sbx_os.makedirs(target, exist_ok=True)
      _sbx_mount(libc, path, target, None, _SBX_MS_BIND | _SBX_MS_REC)
      _sbx_mount(libc, None, target, None, _SBX_MS_BIND | _SBX_MS_REMOUNT | _SBX_MS_RDONLY
                 | _SBX_MS_NOSUID | _SBX_MS_NODEV)
  _sbx_os.makedirs(root + "/dev")
  for name in ("null", "zero", "random", "urandom"):
    open(root + "/dev/" + name, "w").close()
    _sbx_mount(libc, "/dev/" + name, root + "/dev/" + name, None, _SBX_MS_BIND)
  _sbx_os.makedirs(root + "/tmp")
  _sbx_mount(libc, "tmpfs", root + "/tmp", "tmpfs", _SBX_MS_NOSUID | _SBX_MS_NODEV,
             "size=%d,mode=1777" % tmpfs_bytes)
  # The new root itself becomes read-only: /tmp is the only writable place.
  _sbx_mount(libc, None, root, None, _SBX_MS_REMOUNT | _SBX_MS_RDONLY | _SBX_MS_NOSUID
             | _SBX_MS_NODEV, "size=1m,mode=0755")
  _sbx_os.chroot(root)
  _sbx_os.chdir("/tmp")


def _sbx_drop_capabilities(libc):
  """Gives up every capability the user namespace granted us, for this process and its children."""
  _sbx_check(libc.prctl(_SBX_PR_SET_SECUREBITS, _SBX_SECUREBITS, 0, 0, 0), "securebits")
  cap = 0
  while libc.prctl(_SBX_PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
    cap += 1
  if cap == 0:
    _sbx_check(-1, "drop bounding set")
  _sbx_check(libc.prctl(_SBX_PR_CAP_AMBIENT, _SBX_PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "ambient")

  class Header(_sbx_ctypes.Structure):
    _fields_ = [("version", _sbx_ctypes.c_uint32), ("pid", _sbx_ctypes.c_int)]

  class Data(_sbx_ctypes.Structure):
    _fields_ = [("effective", _sbx_ctypes.c_uint32), ("permitted", _sbx_ctypes.c_uint32),
                ("inheritable", _sbx_ctypes.c_uint32)]

  header = Header(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3: two Data words
  data = (Data * 2)()
  _sbx_check(libc.capset(_sbx_ctypes.byref(header), data), "capset")
  _sbx_check(libc.prctl(_SBX_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
  # Not dumpable: the program's processes (same uid) cannot ptrace this one or read its memory.
  # Forked children inherit it but may turn it back on for themselves only.
  _sbx_check(libc.prctl(_SBX_PR_SET_DUMPABLE, 0, 0, 0, 0), "dumpable")


def _sbx_set_limits(limits):
  for name, value in limits.items():
    _sbx_resource.setrlimit(getattr(_sbx_resource, name), (value, value))


def _sbx_init():
  config = _sbx_marshal.loads(bytes.fromhex(_sbx_sys.argv.pop(1)))
  if config.get("unshare"):
    libc = _sbx_libc()
    _sbx_build_root(libc, config["ro_paths"], config["tmpfs_bytes"])
    _sbx_drop_capabilities(libc)
  elif config.get("undumpable"):  # bwrap without a seccomp filter for this architecture
    _sbx_check(_sbx_libc().prctl(_SBX_PR_SET_DUMPABLE, 0, 0, 0, 0), "dumpable")
  _sbx_set_limits(config["rlimits"])


_sbx_init()
