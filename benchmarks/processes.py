"""What the benchmarks share: servers started in their own process (ours and the peers), waited
for until ready and stopped with their children, and repeated timing of a call."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready in {seconds} s")


def start(command: list[str], ready: str, env: dict | None = None, cwd: Path = ROOT) -> subprocess.Popen:
    """Start `command` in a session of its own and wait until `ready` answers 200."""
    process = subprocess.Popen(command, cwd=cwd, env={**os.environ, **(env or {})},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_ready(ready, process)
    except BaseException:
        stop(process)
        raise
    return process


def stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, 9)
        except ProcessLookupError:
            pass


def start_service(settings: dict, cwd: Path = ROOT, python: str = sys.executable) -> tuple[subprocess.Popen, str]:
    """`python -m service` with ECG_<NAME> settings (quiet logs); (process, base URL)."""
    port = free_port()
    env = {"ECG_PORT": str(port), "ECG_LOG_LEVEL": "warning",
           **{f"ECG_{name.upper()}": str(value) for name, value in settings.items()}}
    process = start([python, "-m", "service"], f"http://127.0.0.1:{port}/readyz", env=env, cwd=cwd)
    return process, f"http://127.0.0.1:{port}"


def timed(call, reps: int) -> np.ndarray:
    """Seconds of each of `reps` calls, after one warm-up call."""
    call()
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return np.array(times)
