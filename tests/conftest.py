"""Shared test data: the bundled MIT-BIH excerpts always, the full database where it is present."""

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "mitdb"
FULL_DATABASE = Path(os.environ.get("MITDB_DIR", ROOT.parent / "shared" / "data" / "mitdb"))
MODELS = ROOT / "models"


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def mitdb_dir() -> Path:
    """The complete database; tests that need it are skipped where it is absent."""
    if not (FULL_DATABASE / "100.dat").is_file():
        pytest.skip(f"full MIT-BIH database not found at {FULL_DATABASE} (set MITDB_DIR)")
    return FULL_DATABASE


@pytest.fixture(scope="session")
def fixture_beats(fixture_dir):
    from training.data import load_records

    return load_records(fixture_dir, ("100", "208", "232"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, output=None, seconds: float = 90) -> None:
    """Poll `url` until it answers 200; fail with the process's output if it exits first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            time.sleep(0.5)
            text = output() if output else process.stdout.read()
            pytest.fail(f"{process.args[0]} exited with {process.returncode}: {text}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    process.kill()
    pytest.fail(f"{url} not ready within {seconds} s")


@contextlib.contextmanager
def served(env: dict | None = None, ready_s: float = 90, **settings):
    """A real `ecg-serve` (uvicorn, its own process) with ECG_* settings, in `env` (default: this
    process's environment); yields (base URL, process). Its output is read as it comes (a full pipe
    would stall the server) and is in process.output once the block ends."""
    port = free_port()
    command = shutil.which("ecg-serve", path=os.path.dirname(sys.executable))
    env = {**(os.environ if env is None else env), "ECG_PORT": str(port), "ECG_MODELS_DIR": str(MODELS),
           "ECG_LOG_LEVEL": "warning",
           **{f"ECG_{k.upper()}": str(v) for k, v in settings.items()}}
    process = subprocess.Popen([command], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{base}/readyz", process, lambda: "".join(lines), seconds=ready_s)
        yield base, process
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=60)
        reader.join(timeout=10)
        process.output = "".join(lines)
