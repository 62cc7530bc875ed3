"""The service's own time per request, without a network or a load generator: 64 concurrent
single-beat requests at a time through the ASGI app in this process (as uvicorn would call it,
answers discarded), for a few seconds, repeated. What HTTP load tests cannot separate from the
server, the client and the machine's other load: the app's middleware, routing, parsing,
batching and answering, per request.

Usage: python benchmarks/app_overhead.py [--path oip|predict] [--seconds 2] [--rounds 5]
Run it from a checkout to measure that checkout's service (e.g. an older revision's worktree).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

ROOT = Path.cwd()
sys.path.insert(0, str(ROOT))  # the checkout this is run from

from service.app import create_app  # noqa: E402
from service.settings import Settings  # noqa: E402
from training.data import load_records  # noqa: E402

CLIENTS = 64


def bodies(path: str) -> tuple[str, list[bytes]]:
    records = ROOT / "tests/fixtures/mitdb"
    if path == "predict":
        beats = load_records(records, ("100", "208", "232")).beats[:CLIENTS]
        return "/predict", [json.dumps({"model": "odenet", "beats": [b.round(6).tolist()]}).encode() for b in beats]
    beats = load_records(records, ("100", "208", "232"), input="context").beats[:CLIENTS]
    return "/v2/models/context-odenet/infer", [json.dumps(
        {"inputs": [{"name": "beats", "shape": [1, b.size], "datatype": "FP32", "data": b.round(6).tolist()}]}).encode()
        for b in beats]


async def request(app, path: str, body: bytes) -> int:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"localhost"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}
    delivered, status = False, []

    async def receive():
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client stays connected

    async def send(message):
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    return status[0]


async def measure(path: str, seconds: float, rounds: int) -> None:
    route, payloads = bodies(path)
    app = create_app(Settings(models_dir=ROOT / "models", max_requests_in_flight=1024))
    async with app.router.lifespan_context(app):
        await request(app, route, payloads[0])  # builds the middleware stack
        for _ in range(rounds):
            count, started, cpu = 0, time.perf_counter(), time.process_time()
            while time.perf_counter() - started < seconds:
                statuses = await asyncio.gather(*(request(app, route, body) for body in payloads))
                assert set(statuses) == {200}, statuses
                count += len(payloads)
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu
            print(f"{route}: {1e6 * cpu / count:.0f} us CPU per request ({count / wall:.0f} requests/s, "
                  f"{CLIENTS} at a time)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", choices=("oip", "predict"), default="oip")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(measure(args.path, args.seconds, args.rounds))


if __name__ == "__main__":
    main()
