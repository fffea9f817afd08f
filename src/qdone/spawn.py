"""Start a job's shell with the C library's ``posix_spawn``, letting other threads run.

``os.posix_spawn`` keeps the interpreter lock while the C call runs, and glibc's
``posix_spawn`` returns only once the child has exec'd the shell (it suspends the
parent, as ``vfork`` does): a worker thread starting a job stops every other
thread, the ones reading output, reaping and receiving too, for as long as the
exec takes. A foreign call through ``ctypes`` releases the lock, so on glibc the
call is made that way; elsewhere ``os.posix_spawn`` does the same work.

Both give the child: stdin, stdout and stderr (and any further descriptors, as
3, 4, …) on the given descriptors, a new
session (so a process group to signal as a whole), an empty signal mask, and
SIGPIPE and SIGXFSZ back at their defaults (Python ignores them).
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
from collections.abc import Mapping, Sequence

__all__ = ["environ", "job_environment", "spawn"]

# Python ignores SIGPIPE (and SIGXFSZ); a job gets them back, as Popen does.
DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)

# glibc's values for posix_spawnattr_setflags (spawn.h); SETSID since glibc 2.26.
_SETSIGDEF = 0x04
_SETSIGMASK = 0x08
_SETSID = 0x80
# The opaque types, with room to spare: glibc's are 80, 336 and 128 bytes on
# 64-bit Linux.
_ACTIONS_SIZE = 512
_ATTR_SIZE = 1024
_SIGSET_SIZE = 256


class _Libc:
    """The C library's spawn calls, and one attribute set shared by every spawn
    (read only once made, so safe to share between threads)."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.posix_spawn = lib.posix_spawn
        self.posix_spawn.argtypes = [
            ctypes.POINTER(ctypes.c_int),
            ctypes.c_char_p,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_char_p),
            ctypes.POINTER(ctypes.c_char_p),
        ]
        self.posix_spawn.restype = ctypes.c_int
        self.actions_init = lib.posix_spawn_file_actions_init
        self.actions_destroy = lib.posix_spawn_file_actions_destroy
        self.add_dup2 = lib.posix_spawn_file_actions_adddup2
        self.add_dup2.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        self.add_close = lib.posix_spawn_file_actions_addclose
        self.add_close.argtypes = [ctypes.c_void_p, ctypes.c_int]
        self.attr = ctypes.create_string_buffer(_ATTR_SIZE)
        mask = ctypes.create_string_buffer(_SIGSET_SIZE)
        default = ctypes.create_string_buffer(_SIGSET_SIZE)
        _check(lib.sigemptyset(mask))
        _check(lib.sigemptyset(default))
        for sig in DEFAULT_SIGNALS:
            _check(lib.sigaddset(default, int(sig)))
        _check(lib.posix_spawnattr_init(self.attr))
        _check(lib.posix_spawnattr_setsigmask(self.attr, mask))
        _check(lib.posix_spawnattr_setsigdefault(self.attr, default))
        flags = ctypes.c_short(_SETSID | _SETSIGMASK | _SETSIGDEF)
        _check(lib.posix_spawnattr_setflags(self.attr, flags))


def _check(code: int) -> None:
    if code != 0:
        raise OSError(code, os.strerror(code))


@functools.cache
def _libc() -> _Libc | None:
    """The C library's calls on glibc (2.26 or later, for a new session); None
    elsewhere, or when they cannot be loaded."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION") or ""
        major, minor = (int(part) for part in version.split()[1].split(".")[:2])
        if (major, minor) < (2, 26):
            return None
        return _Libc(ctypes.CDLL("libc.so.6", use_errno=True))
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def environ() -> tuple[bytes, ...]:
    """This process's environment as ``b"NAME=value"`` items, as the OS holds it."""
    return tuple(name + b"=" + value for name, value in os.environb.items())


def job_environment(base: tuple[bytes, ...], extra: Mapping[str, str]) -> list[bytes]:
    """``base`` (``b"NAME=value"`` items) with ``extra`` set over it."""
    added = [f"{name}={value}".encode(*_FS) for name, value in extra.items()]
    names = tuple(item[: item.index(b"=") + 1] for item in added)
    return [*_without(base, names), *added]


@functools.lru_cache(maxsize=8)
def _without(base: tuple[bytes, ...], names: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """``base`` less the items that start with one of ``names`` (a worker sets the
    same names for every job, over the same base)."""
    if not names:
        return base
    return tuple(item for item in base if not item.startswith(names))


_FS = (sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())  # as os.fsencode


def spawn(
    path: str,
    argv: Sequence[str],
    env: Sequence[bytes],
    fds: Sequence[int],
    close: Sequence[int] = (),
) -> int:
    """Start ``path`` with ``argv`` and ``env`` (``b"NAME=value"`` items), with
    ``fds`` as its stdin, stdout, stderr (and descriptors 3, 4, … after them) and
    ``close`` closed, but for those; its pid. Raises ``OSError`` when it cannot be
    started."""
    close = [fd for fd in close if fd >= len(fds)]
    libc = _libc()
    if libc is None:
        return _spawn_os(path, argv, env, fds, close)
    program = path.encode(*_FS)
    args = (ctypes.c_char_p * (len(argv) + 1))(*(arg.encode(*_FS) for arg in argv), None)
    envp = (ctypes.c_char_p * (len(env) + 1))(*env, None)
    actions = ctypes.create_string_buffer(_ACTIONS_SIZE)
    _check(libc.actions_init(actions))
    try:
        for target, fd in enumerate(fds):
            _check(libc.add_dup2(actions, fd, target))
        for fd in close:
            _check(libc.add_close(actions, fd))
        pid = ctypes.c_int(0)
        code = libc.posix_spawn(ctypes.byref(pid), program, actions, libc.attr, args, envp)
    finally:
        libc.actions_destroy(actions)
    if code != 0:
        raise OSError(code, os.strerror(code), path)
    return pid.value


def _spawn_os(
    path: str,
    argv: Sequence[str],
    env: Sequence[bytes],
    fds: Sequence[int],
    close: Sequence[int],
) -> int:
    environ = dict(item.split(b"=", 1) for item in env)
    return os.posix_spawn(
        path,
        list(argv),
        environ,
        file_actions=[
            *((os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(fds)),
            *((os.POSIX_SPAWN_CLOSE, fd) for fd in close),
        ],
        setsid=True,
        setsigmask=(),
        setsigdef=DEFAULT_SIGNALS,
    )
