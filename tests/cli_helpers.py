"""Run the ``qdone`` command as a subprocess, with the test's environment."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping


def run_qdone(
    *args: str,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    if env is not None:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "qdone", *args],
        input=input.decode() if input is not None else None,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
