"""The child side of the sandbox: turn this process into a jail before any untrusted code runs.

Stdlib only: the child imports this file by path (``python -I -S _child.py``) while it is still
privileged, calls :func:`enter` once, and only then reads model-written text. Each layer is applied where
the kernel allows it and :func:`enter` returns the names of those that were, so the parent can report
what protected a run (docs/environments.md, "The sandbox"):

- ``mounts``: a new mount namespace whose root is an empty, size-limited tmpfs holding read-only bind
  mounts of only what the interpreter needs (its stdlib, ``/usr``, a few device nodes, and for a worker
  its site-packages), then ``chroot``. The workspace, the experience library and the repository do not
  exist in there; the only writable place is a fresh ``/sandbox`` (cwd) and ``/tmp`` on that tmpfs, gone
  when the last process of the namespace exits.
- ``network``: a new network namespace: no interface but a loopback that is down, so even a listener
  on the host's 127.0.0.1 is unreachable.
- ``pid_namespace``: the code runs as pid 2 under a tiny init (pid 1) that reaps every orphan; when the
  run ends or is killed, the kernel kills whatever is left in the namespace (a double-forked daemon
  included) and reaps it, and ``kill(-1)`` inside reaches nothing outside.
- ``uid``: as root, setuid/setgid to an otherwise unused uid chosen by the parent (which drops every
  capability, cannot signal the parent or another sandbox, and makes RLIMIT_NPROC count only this
  sandbox); not root, a user namespace gives the mounts and the network namespace, and every capability
  is then dropped.
- ``no_new_privs``, ``rlimits`` (CPU, address space, file size, open files, processes, no core files),
  and a Python audit hook (defense in depth, :func:`install_audit_hook`).
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import sys

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWPID = 0x00020000, 0x10000000, 0x40000000, 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP = 38, 24
_DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random")

_libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


LINUX = sys.platform.startswith("linux")  # namespaces and prctl are Linux's; elsewhere only the portable layers


def _unshare(flags: int) -> bool:
    return LINUX and _libc.unshare(ctypes.c_int(flags)) == 0


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _namespaces(network: bool) -> list[str]:
    """Unshare mount, pid (+ network) namespaces; through a user namespace when not root. Returns what worked."""
    net, names = (CLONE_NEWNET, ["network"]) if network else (0, [])
    full = CLONE_NEWNS | CLONE_NEWPID | net
    if os.geteuid() == 0 and _unshare(full):
        return ["mounts", "pid_namespace", *names]
    uid, gid = os.geteuid(), os.getegid()
    for flags, got in ((full, ["mounts", "pid_namespace"]), (net, [])):
        if _unshare(CLONE_NEWUSER | flags):
            _write("/proc/self/setgroups", "deny")
            _write("/proc/self/uid_map", f"0 {uid} 1")
            _write("/proc/self/gid_map", f"0 {gid} 1")
            return ["userns", *got, *names]
    if network and os.geteuid() == 0 and _unshare(net):
        return names
    return []


def _relay(pid: int) -> None:
    """Wait for the namespace's init and end the way the code's process ended: the same exit status, or
    killed by the same signal (the init cannot die by it, so it passes it on as 128 + signal)."""
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    sig = -code if code < 0 else code - 128 if 128 < code < 128 + signal.NSIG else 0
    if not sig:
        os._exit(code)
    try:
        signal.signal(sig, signal.SIG_DFL)
    except (OSError, ValueError):
        pass  # SIGKILL and SIGSTOP have no handler to reset
    os.kill(os.getpid(), sig)
    os._exit(128 + sig)


def _fork_into_pid_namespace() -> None:
    """After unshare(CLONE_NEWPID): this process relays, a child becomes the namespace's init (pid 1) and
    reaps every orphan, and its child (pid 2) is the one that returns from here and runs the code."""
    init = os.fork()
    if init:
        _relay(init)
    worker = os.fork()
    if worker == 0:
        return
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(0)
        if pid == worker:
            code = os.waitstatus_to_exitcode(status)
            os._exit(code if code >= 0 else 128 - code)  # pid 1 cannot die by its own signal; the relay re-raises it


def _bind_readonly(source: str, root: str) -> None:
    """Bind ``source`` read-only at the same path under ``root`` (a file or a directory)."""
    target = root + source
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    device = source in _DEVICES
    _mount(source, target, None, MS_BIND)
    _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | (0 if device else MS_NODEV))


def _build_root(root: str, paths: list[str], disk_mb: int, uid: int | None) -> None:
    """An empty tmpfs at ``root`` with ``paths`` bound read-only, a writable /sandbox and /tmp; chroot into it."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, f"size={disk_mb}m,nr_inodes=4096,mode=755")
    for path in [*paths, *_DEVICES]:
        if os.path.islink(path) and os.path.dirname(path) == "/":  # /lib -> usr/lib on merged-/usr systems
            os.symlink(os.readlink(path), root + path)
        elif os.path.exists(path):
            _bind_readonly(os.path.realpath(path) if path in _DEVICES else path, root)
    for name, mode in (("sandbox", 0o700), ("tmp", 0o1777)):
        os.makedirs(os.path.join(root, name), exist_ok=True)  # exists if a read-only path lies below it
        os.chmod(os.path.join(root, name), mode)
        if uid is not None:
            os.chown(os.path.join(root, name), uid, uid)
    os.chdir(root)
    os.chroot(".")
    os.chdir("/sandbox")


def _set_rlimits(limits: dict[str, int]) -> None:
    names = {
        "cpu": resource.RLIMIT_CPU, "address_space": resource.RLIMIT_AS, "file_size": resource.RLIMIT_FSIZE,
        "open_files": resource.RLIMIT_NOFILE, "processes": resource.RLIMIT_NPROC, "core": resource.RLIMIT_CORE,
    }
    for key, value in limits.items():
        hard = value + 1 if key == "cpu" else value  # SIGXCPU at the soft limit, SIGKILL one second later
        resource.setrlimit(names[key], (value, hard))


def _drop_capabilities() -> None:
    """No capabilities left (the user-namespace path, where we stay uid 0 of the namespace)."""
    for cap in range(64):
        _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    header, data = Header(0x20080522, 0), (Data * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def enter(cfg: dict) -> list[str]:
    """Apply every layer ``cfg`` asks for that the machine allows; return the names of those applied.

    ``cfg``: ``root`` (an empty host directory, the cwd), ``paths`` (host paths to expose read-only),
    ``disk_mb``, ``isolate_network``, ``uid`` (root only: the uid to become), ``rlimits``.
    """
    layers = _namespaces(cfg["isolate_network"]) if cfg.get("namespaces", True) else []
    uid = cfg.get("uid") if os.geteuid() == 0 else None
    if "mounts" in layers:
        _build_root(cfg["root"], cfg["paths"], cfg["disk_mb"], uid)
    if "pid_namespace" in layers:
        _fork_into_pid_namespace()
    _set_rlimits(cfg["rlimits"])
    layers.append("rlimits")
    if uid is not None:
        if "mounts" not in layers:
            os.chown(cfg["root"], uid, uid)
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        layers.append("uid")
    elif "userns" in layers:
        _drop_capabilities()
        layers.append("no_capabilities")
    if LINUX:
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
        layers.append("no_new_privs")
    for name in [m for m in sys.modules if m == "ctypes" or m.startswith(("ctypes.", "_ctypes"))]:
        del sys.modules[name]  # a later `import ctypes` raises the audit event the hook refuses
    return layers


# ----- the audit hook: defense in depth (Python-level, so not a boundary on its own) -----

_ALWAYS_BLOCKED = {
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "subprocess.Popen",
    "pty.spawn", "os.kill", "os.killpg", "signal.pthread_kill", "os.symlink", "os.link", "os.chroot",
    "ctypes.dlopen", "ctypes.dlsym", "ctypes.dlsym/handle", "ctypes.cdata", "ctypes.call_function",
    "ctypes.addressof", "ctypes.string_at", "ctypes.wstring_at", "ctypes.PyObj_FromPtr",
    "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.sendto", "socket.sendmsg",
    "sys.setprofile", "sys.settrace", "resource.setrlimit",
    "resource.prlimit", "sys.remote_exec", "_posixsubprocess.fork_exec",
}
_BLOCKED_MODULES = {"ctypes", "_ctypes", "socket", "_socket", "subprocess", "_posixsubprocess", "multiprocessing",
                    "_multiprocessing", "pty", "mmap", "_ssl", "ssl", "asyncio"}
_FRAME_EVENTS = {"sys._getframe", "sys._current_frames"}
_FRAME_ATTRS = {"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back", "f_globals", "f_locals", "f_builtins"}
_WRITE_EVENTS = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.utime",
                 "os.truncate", "os.chflags", "os.lchflags", "os.setxattr", "os.removexattr", "shutil.rmtree"}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def install_audit_hook(writable: list[str], readable: list[str], block_frames: bool) -> None:
    """Refuse processes, signals, sockets, ctypes, rlimit changes, imports of those modules, file access
    outside ``readable`` (reads) and ``writable`` (writes), and with ``block_frames`` frame introspection
    (where the process holds something worth stealing: a worker scoring against a reference). Raises
    PermissionError."""
    norm = os.path.normpath
    allowed_read = tuple(norm(p) for p in [*readable, *writable, *_DEVICES])
    allowed_write = tuple(norm(p) for p in writable)

    def inside(path: object, prefixes: tuple[str, ...]) -> bool:
        if isinstance(path, int):
            return True  # an already open descriptor: it was checked when it was opened
        if isinstance(path, bytes):
            path = path.decode("utf-8", "surrogateescape")
        if not isinstance(path, str):
            return False
        full = norm(os.path.join(os.getcwd(), path))
        return any(full == p or full.startswith(p.rstrip("/") + "/") for p in prefixes)

    def hook(event: str, args: tuple) -> None:
        if event in _ALWAYS_BLOCKED:
            raise PermissionError(f"the sandbox does not allow {event}")
        if event == "import" and args[0].partition(".")[0] in _BLOCKED_MODULES:
            raise PermissionError(f"the sandbox does not allow importing {args[0]}")
        if block_frames and (event in _FRAME_EVENTS or (event == "object.__getattr__" and args[1] in _FRAME_ATTRS)):
            raise PermissionError(f"the sandbox does not allow frame introspection ({event} {args[1:2]})")
        if event == "open":
            path, mode, flags = args
            writing = any(c in (mode or "") for c in "wax+") or bool((flags or 0) & _WRITE_FLAGS)
            if writing and not inside(path, (*allowed_write, "/dev/null")):
                raise PermissionError(f"the sandbox does not allow writing {path!r}")
            if not inside(path, allowed_read):
                raise PermissionError(f"the sandbox does not allow reading {path!r}")
        elif event in _WRITE_EVENTS:
            for path in args[:2] if event == "os.rename" else args[:1]:
                if not inside(path, allowed_write):
                    raise PermissionError(f"the sandbox does not allow {event} on {path!r}")
        elif event in ("os.listdir", "os.scandir") and args and args[0] is not None and not inside(args[0], allowed_read):
            raise PermissionError(f"the sandbox does not allow listing {args[0]!r}")

    sys.addaudithook(hook)
