"""Strip analysis (reading a posted record, finding its R-peaks, cutting its beats) in worker
processes, so it never holds the event loop or the GIL of the process that answers everyone else,
and so a strip past its deadline can be stopped: its worker is killed and replaced.

The main process only spools the body (in memory up to 1 MiB, else on disk) and hands it over;
the worker parses it (a JSON strip with pydantic's JSON parser, a FHIR Observation, a WFDB record)
and returns the R-peaks and the beats in the format of the model the request names.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from service.runtime.batching import Overloaded, Timeout
from service.signal.strips import StripError

log = logging.getLogger("service.signal.strips")
SPOOL_IN_MEMORY = 1 << 20  # bodies above 1 MiB go to a temporary file, not the main process's memory


@dataclass(frozen=True)
class StripTask:
    """What a worker needs: the route's body (bytes or a file), and how to read it."""

    route: str  # "strip" (JSON StripRequest), "fhir" (Observation JSON) or "wfdb" (header + signal files)
    body: bytes | None = None
    path: str | None = None  # the spooled body, or the WFDB signal file
    header: bytes | None = None  # WFDB header
    lead: str | None = None
    model: str | None = None  # named in the query (fhir, wfdb); a JSON strip names it in its body
    model_kinds: dict[str, str] = field(default_factory=dict)  # loaded model -> input kind
    default_model: str = ""

    def data(self) -> bytes:
        return self.body if self.body is not None else Path(self.path).read_bytes()


@dataclass(frozen=True)
class StripAnalysis:
    model: str | None  # the model the request named (None: the default)
    solver: dict | None  # solver settings a JSON strip set
    fs: float
    lead: str | None
    duration_s: float
    peaks: np.ndarray
    beats: np.ndarray  # in the named model's input format; empty when the model is unknown
    reason: str | None


class StripRejected(StripError):
    """The strip cannot be analysed; carries what the request named, so the model and solver
    settings are judged first, as they would be before any analysis."""

    def __init__(self, field: str, message: str, model: str | None = None, solver: dict | None = None):
        super().__init__(field, message)
        self.model, self.solver = model, solver


class BodyInvalid(ValueError):
    """The body does not match the route's schema; `errors` in FastAPI's format, inputs stripped."""

    def __init__(self, errors: list[dict]):
        super().__init__("invalid body")
        self.errors = errors


def analyse(task: StripTask) -> StripAnalysis:
    """Runs in a worker: read the strip, find its R-peaks, cut its beats."""
    from pydantic import ValidationError

    from service.signal.formats import Lead, read_fhir, read_wfdb
    from service.schemas import StripRequest
    from service.signal.strips import strip_beats

    model, solver = task.model, None
    if task.route == "strip":
        try:
            request = StripRequest.model_validate_json(task.data())
        except ValidationError as err:
            raise BodyInvalid([{"type": e["type"], "loc": ("body", *e["loc"]), "msg": e["msg"],
                                "input": e.get("input") if isinstance(e.get("input"), (int, float)) else None}
                               for e in err.errors(include_url=False)[:20]]) from None
        signal = np.asarray(request.signal, dtype=np.float64)
        if request.units == "adc":
            if request.gain is None:
                raise StripError("gain", "units 'adc' need the gain (ADC units per mV)")
            signal = (signal - request.baseline) / request.gain
        lead = Lead(signal, request.sampling_rate, None)
        model = request.model
        solver = request.solver.model_dump(exclude_unset=True) if request.solver else None
    elif task.route == "fhir":
        import orjson

        try:
            observation = orjson.loads(task.data())
        except orjson.JSONDecodeError as err:
            raise BodyInvalid([{"type": "json_invalid", "loc": ("body", err.pos), "msg": "JSON decode error"}]) from None
        lead = read_fhir(observation, task.lead)
    else:
        lead = read_wfdb(task.header, task.data(), task.lead)
    kind = task.model_kinds.get(model or task.default_model)
    try:
        found = strip_beats(lead.signal_mv, lead.fs, kind or "beat")
    except StripError as err:
        raise StripRejected(err.field, str(err), model, solver) from None
    beats = found.beats if kind else found.beats[:0]
    return StripAnalysis(model, solver, lead.fs, lead.name, lead.signal_mv.size / lead.fs, found.peaks, beats,
                         found.reason)


def serve(connection) -> None:
    """A worker's loop: one task in, one reply out, until the pipe closes."""
    while True:
        try:
            task = connection.recv()
        except EOFError:
            return
        try:
            reply = ("ok", analyse(task))
        except StripRejected as err:
            reply = ("strip", err.field, str(err), err.model, err.solver)
        except StripError as err:
            reply = ("strip", err.field, str(err), task.model, None)
        except BodyInvalid as err:
            reply = ("invalid", err.errors)
        except Exception as err:  # never let one bad strip end the worker
            reply = ("error", f"{type(err).__name__}: {err}")
        connection.send(reply)


class Worker:
    """One worker process, started as its own program (`python -m service.runtime.strip_worker FD`), so it
    never re-runs whatever started the service; tasks and replies travel over a socket pair."""

    def __init__(self):
        ours, theirs = socket.socketpair()
        self.process = subprocess.Popen([sys.executable, "-m", "service.runtime.strip_worker", str(theirs.fileno())],
                                        pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        theirs.close()
        self.connection = Connection(ours.detach())

    def call(self, task: StripTask):
        self.connection.send(task)
        return self.connection.recv()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=5)
        self.connection.close()


class WorkerFailed(RuntimeError):
    """A worker died while analysing (not killed by us): a 503, and the worker is replaced."""


class StripWorkers:
    """A fixed number of strip workers; requests beyond them wait (up to `max_waiting`, then 503),
    and a request past its deadline, or whose client has gone, has its worker killed and replaced."""

    def __init__(self, processes: int = 1, max_waiting: int = 8):
        self.size, self.max_waiting = processes, max_waiting
        self.idle: asyncio.Queue[Worker] = asyncio.Queue()
        self.waiting = 0
        self.threads = ThreadPoolExecutor(max_workers=processes, thread_name_prefix="strip-call")
        self.workers: set[Worker] = set()

    def spawn(self) -> None:
        worker = Worker()
        self.workers.add(worker)
        self.idle.put_nowait(worker)

    async def start(self, warm_up: StripTask | None = None) -> None:
        for _ in range(self.size):
            self.spawn()
        if warm_up is not None:  # import everything in every worker before the service says ready
            leased = [await self.idle.get() for _ in range(self.size)]
            loop = asyncio.get_running_loop()
            await asyncio.gather(*(loop.run_in_executor(self.threads, w.call, warm_up) for w in leased))
            for worker in leased:
                self.idle.put_nowait(worker)

    async def stop(self) -> None:
        for worker in list(self.workers):
            worker.kill()
        self.workers.clear()
        self.threads.shutdown(wait=False, cancel_futures=True)

    def retire(self, worker: Worker) -> None:
        """Kill a worker whose answer nobody will read."""
        worker.kill()
        self.workers.discard(worker)

    def replace(self, call: asyncio.Future) -> None:
        """A retired worker's call has ended (with EOFError): start its replacement."""
        if not call.cancelled():
            call.exception()
        self.spawn()

    async def analyse(self, task: StripTask, deadline: float) -> StripAnalysis:
        if self.waiting >= self.max_waiting:
            raise Overloaded(f"{self.waiting} strips are waiting for analysis (limit {self.max_waiting})")
        self.waiting += 1
        try:
            worker = await asyncio.wait_for(self.idle.get(), max(deadline - time.monotonic(), 0))
        except TimeoutError:
            raise Timeout("deadline passed while waiting for a strip worker") from None
        finally:
            self.waiting -= 1
        loop = asyncio.get_running_loop()
        call = loop.run_in_executor(self.threads, worker.call, task)
        try:
            reply = await asyncio.wait_for(asyncio.shield(call), max(deadline - time.monotonic(), 0))
        except (TimeoutError, asyncio.CancelledError) as err:
            self.retire(worker)
            call.add_done_callback(self.replace)
            if isinstance(err, TimeoutError):
                raise Timeout("deadline passed while the strip was analysed; the analysis was stopped") from None
            raise
        except (EOFError, OSError):
            self.retire(worker)
            self.spawn()
            raise WorkerFailed("the strip worker stopped unexpectedly; it was replaced, retry") from None
        self.idle.put_nowait(worker)
        status = reply[0]
        if status == "ok":
            return reply[1]
        if status == "strip":
            raise StripRejected(*reply[1:])
        if status == "invalid":
            raise BodyInvalid(reply[1])
        log.error("strip analysis failed: %s", reply[1])
        raise WorkerFailed("strip analysis failed unexpectedly; the server logged it")


async def spool(stream, limit_in_memory: int = SPOOL_IN_MEMORY) -> tuple[bytes | None, str | None]:
    """A request body kept in memory up to `limit_in_memory` bytes, else written to a temporary
    file (the caller removes it): (bytes, None) or (None, path)."""
    buffer, handle = bytearray(), None
    try:
        async for chunk in stream:
            if handle is None and len(buffer) + len(chunk) <= limit_in_memory:
                buffer += chunk
                continue
            if handle is None:
                handle = tempfile.NamedTemporaryFile(prefix="ecg-strip-", delete=False)
                handle.write(buffer)
                buffer = bytearray()
            handle.write(chunk)
    except BaseException:
        if handle is not None:
            handle.close()
            os.unlink(handle.name)
        raise
    if handle is None:
        return bytes(buffer), None
    handle.close()
    return None, handle.name


if __name__ == "__main__":  # a worker: run the module's own serve, so replies pickle by their real names
    from service.runtime.strip_worker import serve as serve_tasks

    serve_tasks(Connection(int(sys.argv[1])))
