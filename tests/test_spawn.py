"""The two ways of starting a job's shell (the C library's, and ``os.posix_spawn``
where it is not glibc) give the child the same things."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from qdone import spawn as spawn_module
from qdone.spawn import environ, job_environment, spawn


@pytest.fixture(params=["libc", "os"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "libc":
        if spawn_module._libc() is None:
            pytest.skip("not glibc 2.26+")
    else:
        monkeypatch.setattr(spawn_module, "_libc", lambda: None)
    yield request.param


def run(
    command: str, env: Sequence[bytes], tmp_path: Path, close: tuple[int, ...] = ()
) -> tuple[int, str, str, int]:
    """Start ``command`` under /bin/sh with files for stdout and stderr; its pid,
    output and exit status."""
    out_path, err_path = tmp_path / "out", tmp_path / "err"
    stdin = os.open(os.devnull, os.O_RDONLY)
    out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    err = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        pid = spawn("/bin/sh", ["/bin/sh", "-c", command], env, (stdin, out, err), close)
    finally:
        for fd in (stdin, out, err):
            os.close(fd)
    _, status = os.waitpid(pid, 0)
    return pid, out_path.read_text(), err_path.read_text(), os.waitstatus_to_exitcode(status)


def test_output_environment_and_exit_code(way: str, tmp_path: Path) -> None:
    env = job_environment(environ(), {"QDONE_TEST": "héllo wörld"})
    _, out, err, code = run('echo "$QDONE_TEST"; echo oops >&2; exit 3', env, tmp_path)
    assert (out, err, code) == ("héllo wörld\n", "oops\n", 3)


def test_stdin_is_the_given_descriptor(way: str, tmp_path: Path) -> None:
    _, out, _, code = run("cat; echo end", environ(), tmp_path)
    assert (out, code) == ("end\n", 0)


def test_new_session_and_process_group(way: str, tmp_path: Path) -> None:
    pid, out, _, _ = run("ps -o sid=,pgid= -p $$", environ(), tmp_path)
    assert out.split() == [str(pid), str(pid)]


def test_sigpipe_is_back_at_its_default(way: str, tmp_path: Path) -> None:
    # With SIGPIPE ignored (as in Python), `yes` would get EPIPE and print an error.
    _, _, err, code = run("yes | head -n 1 >/dev/null; echo done >&2", environ(), tmp_path)
    assert (err, code) == ("done\n", 0)


def test_signal_mask_is_empty(way: str, tmp_path: Path) -> None:
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    try:
        # The shell reads its own status (a grep it forks may see a mask set for the fork).
        command = 'while read -r k v; do [ "$k" = SigBlk: ] && echo "$v"; done < /proc/$$/status'
        _, out, _, _ = run(command, environ(), tmp_path)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    assert out.strip().strip("0") == ""


def test_listed_descriptors_are_closed(way: str, tmp_path: Path) -> None:
    r, w = os.pipe()
    os.set_inheritable(w, True)
    try:
        _, kept, _, _ = run(f"test -e /proc/self/fd/{w} && echo open", environ(), tmp_path)
        _, closed, _, _ = run(
            f"test -e /proc/self/fd/{w} || echo closed", environ(), tmp_path, (w,)
        )
    finally:
        os.close(r)
        os.close(w)
    assert (kept, closed) == ("open\n", "closed\n")


def test_a_missing_program_is_an_os_error(way: str) -> None:
    with pytest.raises(OSError):
        spawn("/nonexistent/sh", ["sh"], environ(), (0, 1, 2))


def test_job_environment_sets_over_the_base() -> None:
    base = (b"A=1", b"QDONE_QUEUE=old", b"QDONE_QUEUE_X=keep")
    assert job_environment(base, {"QDONE_QUEUE": "new"}) == [
        b"A=1",
        b"QDONE_QUEUE_X=keep",
        b"QDONE_QUEUE=new",
    ]
    assert job_environment(base, {}) == list(base)
