"""What heavy, late and killed work costs, on a real uvicorn: strip-worker memory bounded by the
body and handed back afterwards, late strips that do not kill and respawn a worker each time, no
temporary files left by a killed worker; and (with the real model, in process) costly batches that
stop computing once nobody awaits them."""

import asyncio
import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import wfdb

from conftest import MODELS, served

PEAK_FACTOR = 8  # a strip worker's peak memory grows by at most this many times the body (docs/reliability.md)


def strip_workers(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                command = open(f"/proc/{entry}/cmdline", "rb").read()
                ppid = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if ppid == parent and b"service.runtime.strip_worker" in command:
                found.append(int(entry))
    return sorted(found)


def memory_mib(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":")) / 1024


def observation(data: str, period_ms: float = 1.0, components=None) -> bytes:
    body = {"resourceType": "Observation", "status": "final", "code": {"text": "ECG"}}
    if components is None:
        body["valueSampledData"] = {"origin": {"value": 0, "code": "mV"}, "period": period_ms, "dimensions": 1,
                                    "data": data}
    else:
        body["component"] = components
    return json.dumps(body).encode()


def test_strip_worker_memory_is_bounded_by_the_body_and_handed_back():
    bodies = [
        ("/predict/fhir", observation("12 " * 3_000_000)),  # 9 MB, 50 min of a flat line
        ("/predict/fhir", observation("12 " * 30_000_000)),  # 90 MB: longer than 60 min
        ("/predict/fhir", observation("", components=[{"code": {"text": "x"}}] * 500_000)),
        ("/predict/strip", b'{"sampling_rate": 360, "signal": [' + b"0.1," * 4_000_000 + b"0.1]}"),
    ]
    with served(request_timeout_s=120) as (base, process):
        worker = strip_workers(process.pid)[0]
        start = memory_mib(worker, "VmRSS")
        for path, body in bodies:
            with open(f"/proc/{worker}/clear_refs", "w") as refs:
                refs.write("5")  # VmHWM from now on: this request's peak
            response = httpx.post(f"{base}{path}", content=body, headers={"content-type": "application/json"},
                                  timeout=120)
            assert response.status_code == 422, response.text[:300]
            peak = memory_mib(worker, "VmHWM") - start
            assert peak < PEAK_FACTOR * len(body) / 2 ** 20 + 64, (path, len(body), peak)
            assert strip_workers(process.pid) == [worker]  # handed back, not replaced
            assert memory_mib(worker, "VmRSS") < 1.1 * start + 16, (path, memory_mib(worker, "VmRSS"), start)


def test_late_strips_neither_kill_nor_respawn_workers(fixture_dir):
    record = wfdb.rdrecord(str(fixture_dir / "100"), physical=True)
    body = {"sampling_rate": 360, "signal": record.p_signal[:, 0].round(3).tolist()}
    with served(max_waiting_strips=16) as (base, process):
        before = strip_workers(process.pid)

        def late(_):
            return httpx.post(f"{base}/predict/strip", json=body, headers={"X-Request-Timeout": "0.05"},
                              timeout=30).status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(late, range(24)))
        assert set(statuses) <= {503, 504} and 504 in statuses, statuses
        time.sleep(1.0)
        assert strip_workers(process.pid) == before  # the same worker: none killed, none started
        assert httpx.post(f"{base}/predict/strip", json=body, timeout=60).status_code != 503


def test_a_costly_batch_is_computed_in_slices_and_stops_once_nobody_awaits_it(fixture_beats):
    """A batch with other than the default solver settings runs slice by slice in the model's
    thread: exactly the whole batch's answer while its requests are awaited, nothing more once none
    is (their 504s have gone out, or their clients left)."""
    from service.metrics import ServiceMetrics
    from service.models.registry import ModelRegistry
    from service.models.solver import SolverConfig
    from service.runtime.batching import Arrivals, Job, ModelBatcher

    loaded = ModelRegistry.load(MODELS).models["odenet"]
    solver = SolverConfig(method="rk4", step_size=0.05, max_num_steps=1000)
    inputs = fixture_beats.beats[:100].astype("float32")

    async def scenario():
        loop = asyncio.get_running_loop()
        batcher = ModelBatcher("odenet", loaded.predictor, Arrivals(), ServiceMetrics())
        awaited = [Job(inputs, solver, loop.time() + 60, loop.create_future())]
        whole = await batcher.in_thread(inputs, solver, awaited, loop)
        abandoned = [Job(inputs, solver, loop.time() + 60, loop.create_future())]
        abandoned[0].future.cancel()
        stopped = await batcher.in_thread(inputs, solver, abandoned, loop)
        await batcher.stop()
        return whole, stopped

    whole, stopped = asyncio.run(scenario())
    assert stopped is None
    direct = loaded.predictor.predict(inputs, solver)
    assert np.array_equal(whole.probabilities, direct.probabilities) and np.array_equal(whole.nfe, direct.nfe)


def test_a_killed_wfdb_worker_leaves_no_temporary_files(fixture_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    files = {"header": ("100.hea", (fixture_dir / "100.hea").read_bytes()),
             "signal": ("100.dat", (fixture_dir / "100.dat").read_bytes())}
    with served() as (base, process):
        for attempt in range(3):
            worker = strip_workers(process.pid)[0]
            os.kill(worker, signal.SIGSTOP)  # the analysis cannot finish before it is killed
            answer = {}
            upload = threading.Thread(target=lambda: answer.update(
                status=httpx.post(f"{base}/predict/wfdb", files=files, timeout=60).status_code))
            upload.start()
            deadline = time.monotonic() + 20
            while not list(tmp_path.glob("ecg-strips-*/ecg-wfdb-*")) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert list(tmp_path.glob("ecg-strips-*/ecg-wfdb-*")), "the record's folder was made"
            os.kill(worker, signal.SIGKILL)
            upload.join(timeout=60)
            assert answer["status"] == 503
            assert not list(tmp_path.rglob("ecg-wfdb-*")), list(tmp_path.rglob("*"))
            deadline = time.monotonic() + 20
            while (not strip_workers(process.pid) or strip_workers(process.pid) == [worker]) \
                    and time.monotonic() < deadline:
                time.sleep(0.1)
    assert not list(tmp_path.glob("ecg-*")), list(tmp_path.iterdir())  # the scratch folder went with the service
