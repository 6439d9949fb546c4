"""Waiting for a condition another process brings about: poll it, bounded, never a bare sleep."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any


def wait_for(
    condition: Callable[[], Any],
    *,
    what: str,
    timeout: float = 60.0,
    process: subprocess.Popen[Any] | None = None,
) -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds or as
    soon as `process` (the program expected to bring the condition about) has exited."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            raise AssertionError(f"process exited ({process.returncode}) before {what}")
        if time.monotonic() > deadline:
            detail = ""
            if process is not None:  # what the process said is the best clue to why
                process.kill()
                _, stderr = process.communicate()
                detail = f"; its stderr ends: {str(stderr)[-1500:]}"
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(0.02)
