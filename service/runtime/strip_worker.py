"""Strip analysis (reading a posted record, finding its R-peaks, cutting its beats) in worker
processes, so it never holds the event loop or the GIL of the process that answers everyone else.

The main process only spools the body (in memory up to 1 MiB, else on disk) and hands it over;
the worker parses it (a JSON strip with pydantic's JSON parser, a FHIR Observation, a WFDB record)
and returns the R-peaks and the beats in the format of the model the request names.

- Every failure of an analysis is the input's (the same input fails the same way): a 422 naming
  the part of the request at fault, in words, never the library's message; only a worker that
  dies is a 503. Samples further than MAX_DEVIATION_MV from the strip's median are refused before
  any detection (wrong units, a gain of 1e-300, a factor of 1e300).
- A strip past its deadline gets its 504 at once, but its worker is not killed: the worker stops
  at the next stage (it knows the deadline) and goes back to the pool; only one still busy
  ECG_STRIP_OVERRUN_S after the deadline is killed and replaced.
- Memory: a worker's data segment is capped (RLIMIT_DATA, ECG_STRIP_WORKER_MEMORY_MIB): a strip
  that would need more is a 422 ("too large to analyse"), never a machine out of memory. Sizes are
  checked before parsing where they can be (samples of a JSON strip, one lead's or all its leads'
  together, tokens and JSON objects of an Observation), so what is too long is refused before it is
  built; of a strip's several leads only the one analysed becomes an array. After every strip, and
  before its reply, a worker frees what the strip left in reference cycles (gc.collect: wfdb's GQRS
  detector leaves one that holds about 90 bytes a sample) and after a large strip hands freed
  memory back to the system (malloc_trim); one still above ECG_STRIP_WORKER_RSS_MIB is replaced
  (docs/reliability.md gives the measured peaks).
- Files: each WFDB record is written into a folder the main process made (under one scratch
  folder of the service) and removes itself, so a killed worker leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import gc
import json
import logging
import os
import shutil
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
from service.signal.strips import MAX_SECONDS, StripError

log = logging.getLogger("service.signal.strips")
SPOOL_IN_MEMORY = 1 << 20  # bodies above 1 MiB go to a temporary file, not the main process's memory
MAX_DEVIATION_MV = 50.0  # an ECG's samples lie within a few mV of its median; 50 mV is far past any lead
MAX_JSON_OBJECTS = 10_000  # an Observation of 15 leads holds about a hundred
TRIM_ABOVE_BYTES = 4 << 20  # after a body this large the worker hands freed memory back to the system
SAMPLES_FIELD = {"strip": "signal", "fhir": "observation", "wfdb": "signal"}


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
    folder: str | None = None  # where a WFDB record is written (made and removed by the main process)
    deadline: float | None = None  # time.monotonic(): past it the worker stops at the next stage

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
    unreadable: tuple = ()  # service.signal.quality.Span: stretches with no readable ECG, their beats dropped
    leads: tuple[str, ...] | None = None  # the leads the input held, where it names them; `lead` was analysed
    af_criteria: np.ndarray | None = None  # per beat, context beats only (service.signal.rhythm)


class StripRejected(StripError):
    """The strip cannot be analysed; carries what the request named, so the model and solver
    settings are judged first, as they would be before any analysis."""

    def __init__(self, field: str, message: str, model: str | None = None, solver: dict | None = None):
        super().__init__(field, message)
        self.model, self.solver = model, solver


class Late(Exception):
    """The deadline passed during the analysis: the worker stopped between two stages."""


def check_deadline(task: StripTask) -> None:
    if task.deadline is not None and time.monotonic() > task.deadline:
        raise Late()


def check_amplitude(signal: np.ndarray, field: str) -> None:
    """Refuse samples no lead in mV can hold (wrong units, gains or factors), before any detection:
    GQRS fails on them, or finds beats that are not there."""
    finite = np.isfinite(signal)
    if not finite.all():
        raise StripError(field, "strip contains NaN or infinite samples (or values too large once scaled to mV)")
    if signal.size:
        median = float(np.median(signal))
        deviation = float(np.max(np.abs(signal - median)))
        if deviation > MAX_DEVIATION_MV:
            raise StripError(field, f"samples reach {deviation:.3g} mV from the strip's median; an ECG lies "
                                    f"within {MAX_DEVIATION_MV:g} mV of it: are the units right (mV, or ADC units "
                                    "with the ADC gain)?")


class BodyInvalid(ValueError):
    """The body does not match the route's schema; `errors` in FastAPI's format, inputs stripped."""

    def __init__(self, errors: list[dict]):
        super().__init__("invalid body")
        self.errors = errors


def check_strip_size(data: bytes) -> None:
    """Refuse a JSON strip with too many samples before a Python float is built for each: a body
    with more commas than the samples allowed (one lead as `signal`, or all of `leads` together)
    and room for the other fields (lead names may hold commas too)."""
    from service.schemas import MAX_LEAD_NAME, MAX_STRIP_LEADS, MAX_STRIP_SAMPLES, MAX_STRIP_TOTAL_SAMPLES

    commas = data.count(b",")
    if commas <= MAX_STRIP_SAMPLES + 64:
        return
    if b'"leads"' not in data:
        raise BodyInvalid([{"type": "too_long", "loc": ("body", "signal"), "input": None,
                            "msg": f"signal holds more than {MAX_STRIP_SAMPLES} samples"}])
    if commas > MAX_STRIP_TOTAL_SAMPLES + 64 + MAX_STRIP_LEADS * (MAX_LEAD_NAME + 2):
        raise BodyInvalid([{"type": "too_long", "loc": ("body", "leads"), "input": None,
                            "msg": f"the leads hold more than {MAX_STRIP_TOTAL_SAMPLES} samples in all"}])


def analyse(task: StripTask) -> StripAnalysis:
    """Runs in a worker: read the strip, find its R-peaks, cut its beats."""
    from pydantic import ValidationError

    from service.signal.formats import read_fhir, read_strip, read_wfdb
    from service.schemas import StripRequest
    from service.signal.strips import strip_beats

    model, solver = task.model, None
    if task.route == "strip":
        data = task.data()
        check_strip_size(data)
        try:
            request = StripRequest.model_validate_json(data)
        except ValidationError as err:
            raise BodyInvalid([{"type": e["type"], "loc": ("body", *e["loc"]), "msg": e["msg"],
                                "input": e.get("input") if isinstance(e.get("input"), (int, float)) else None}
                               for e in err.errors(include_url=False)[:20]]) from None
        del data
        model = request.model
        solver = request.solver.model_dump(exclude_unset=True) if request.solver else None
        try:
            lead = read_strip(request)  # the chosen lead as an array; every lead's Python floats freed
        except StripError as err:
            raise StripRejected(err.field, str(err), model, solver) from None
        del request
    elif task.route == "fhir":
        import orjson

        data = task.data()
        if data.count(b"{") > MAX_JSON_OBJECTS or data.count(b"[") > MAX_JSON_OBJECTS:
            raise StripError("observation", f"Observation holds more than {MAX_JSON_OBJECTS} JSON objects or arrays")
        try:
            observation = orjson.loads(data)
        except orjson.JSONDecodeError as err:
            raise BodyInvalid([{"type": "json_invalid", "loc": ("body", err.pos), "msg": "JSON decode error"}]) from None
        lead = read_fhir(observation, task.lead)
        del observation
    else:
        lead = read_wfdb(task.header, task.data() if task.path is None else task.path, task.lead, task.folder)
    kind = task.model_kinds.get(model or task.default_model)
    check_deadline(task)
    try:
        check_amplitude(lead.signal_mv, SAMPLES_FIELD[task.route])
        found = strip_beats(lead.signal_mv, lead.fs, kind or "beat")
    except StripError as err:
        if task.route == "strip" and lead.received is not None and err.field == "signal":  # one of `leads`
            raise StripRejected("leads", f"lead {lead.name!r} (the lead analysed): {err}", model, solver) from None
        raise StripRejected(err.field, str(err), model, solver) from None
    check_deadline(task)
    beats = found.beats if kind else found.beats[:0]
    return StripAnalysis(model, solver, lead.fs, lead.name, lead.signal_mv.size / lead.fs, found.peaks, beats,
                         found.reason, found.unreadable, lead.received, found.af_criteria if kind else None)


def serve(connection, memory_mib: int = 0) -> None:
    """A worker's loop: one task in, one reply out, until the pipe closes."""
    if memory_mib:
        import resource

        limit = memory_mib << 20
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    frozen = False
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
        except Late:
            reply = ("late",)
        except Exception as err:  # any other failure is the input's too: the same strip fails the same way
            reply = ("strip", SAMPLES_FIELD.get(task.route, "signal"), unreadable(task, err), task.model, None)
            print(json.dumps({"event": "strip_unreadable", "route": task.route,
                              "error": f"{type(err).__name__}: {err}"[:300]}), file=sys.stderr, flush=True)
        large = len(task.body or b"") > TRIM_ABOVE_BYTES or task.path is not None
        task = None  # of this strip only its reply is left
        # Freed and handed back before the reply goes (1 to 2 ms after a 30-minute strip), so the
        # memory the main process finds once it has the reply is what this worker keeps.
        collect_garbage(freeze=not frozen)
        frozen = True
        if large:
            release_memory()
        connection.send(reply)
        reply = None


def unreadable(task: StripTask, err: Exception) -> str:
    """What to tell the client about an input that broke the analysis, in words (no library text)."""
    what = {"strip": "strip", "fhir": "Observation", "wfdb": "WFDB record"}.get(task.route, "input")
    if isinstance(err, RecursionError):
        return f"the {what} is nested too deeply to read"
    if isinstance(err, MemoryError):
        return f"the {what} is too large to analyse"
    if isinstance(err, OverflowError):
        return f"the {what}'s values are too large to analyse once scaled to mV"
    return f"the {what} could not be analysed: its values or structure are not those of an ECG lead"


def collect_garbage(freeze: bool = False) -> None:
    """Free what a strip left in reference cycles, after every strip. wfdb's GQRS detector is one
    (its nested `peaktype` calls itself, so its closure keeps the detector alive, and with it two
    Python ints for every sample of the strip: 55 MiB for 30 minutes at 360 Hz) until a collection
    of the oldest generation, which Python's thresholds put off for several strips: a worker grew by
    that much every strip or two. `freeze` (after the first strip: everything imported, every cache
    filled) moves what is left out of the collector's sight (gc.freeze), so each later collection
    walks only the last strip's objects (about 1 ms instead of 100 ms)."""
    gc.collect()
    if freeze:
        gc.freeze()


def release_memory() -> None:
    """Hand memory freed by a large strip back to the system (glibc keeps it otherwise)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the RSS check replaces the worker if need be
        pass


def rss_mib(pid: int) -> float:
    """A process's resident memory in MiB (0 where /proc is not there)."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)
    except (OSError, ValueError, IndexError):
        return 0.0


class Worker:
    """One worker process, started as its own program (`python -m service.runtime.strip_worker FD`), so it
    never re-runs whatever started the service; tasks and replies travel over a socket pair."""

    def __init__(self, memory_mib: int = 0):
        ours, theirs = socket.socketpair()
        self.process = subprocess.Popen([sys.executable, "-m", "service.runtime.strip_worker", str(theirs.fileno()),
                                         str(memory_mib)], pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
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
    """A fixed number of strip workers; requests beyond them wait (up to `max_waiting`, then 503).
    A request past its deadline, or whose client has gone, leaves its worker to finish (or stop at
    its next stage) and return to the pool; one overrunning by `overrun_s` is killed and replaced,
    as is one whose memory stays above `max_rss_mib`."""

    def __init__(self, processes: int = 1, max_waiting: int = 8, overrun_s: float = 30.0, max_rss_mib: float = 512,
                 memory_mib: int = 0):
        self.size, self.max_waiting, self.overrun_s, self.max_rss_mib = processes, max_waiting, overrun_s, max_rss_mib
        self.memory_mib = memory_mib
        self.idle: asyncio.Queue[Worker] = asyncio.Queue()
        self.waiting = 0
        self.threads = ThreadPoolExecutor(max_workers=processes, thread_name_prefix="strip-call")
        self.workers: set[Worker] = set()
        self.scratch: str | None = None  # the service's folder for WFDB records being read
        self.spawned = 0  # workers started, replacements included

    def spawn(self) -> None:
        worker = Worker(self.memory_mib)
        self.spawned += 1
        self.workers.add(worker)
        self.idle.put_nowait(worker)

    async def start(self, warm_up: StripTask | None = None) -> None:
        self.scratch = tempfile.mkdtemp(prefix="ecg-strips-")
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
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def retire(self, worker: Worker) -> None:
        """Kill a worker (overrunning, or too large)."""
        worker.kill()
        self.workers.discard(worker)

    def returned(self, worker: Worker) -> None:
        """A worker whose call ended normally goes back to the pool, or is replaced if its memory
        stayed high."""
        if worker not in self.workers:
            return
        if self.max_rss_mib and rss_mib(worker.process.pid) > self.max_rss_mib:
            log.info("strip worker %d above %g MiB after a strip: replaced", worker.process.pid, self.max_rss_mib)
            self.retire(worker)
            self.spawn()
            return
        self.idle.put_nowait(worker)

    def abandon(self, worker: Worker, call: asyncio.Future, folder: str | None) -> None:
        """Nobody awaits this call any more: its worker returns to the pool when it ends, or is
        killed and replaced if it is still busy `overrun_s` from now."""
        timer = asyncio.get_running_loop().call_later(self.overrun_s, self.overrun, worker, call)

        def ended(future: asyncio.Future) -> None:
            timer.cancel()
            remove(folder)
            if future.cancelled() or future.exception() is not None:  # killed, or died: replace it
                self.retire(worker)
                self.spawn()
            else:
                self.returned(worker)

        call.add_done_callback(ended)

    def overrun(self, worker: Worker, call: asyncio.Future) -> None:
        if not call.done():
            log.warning("strip worker %d still busy %g s past a deadline: killed and replaced",
                        worker.process.pid, self.overrun_s)
            worker.process.kill()  # the call then ends with EOFError, and `abandon` replaces it

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
        folder = tempfile.mkdtemp(prefix="ecg-wfdb-", dir=self.scratch) if task.route == "wfdb" else None
        task = dataclasses.replace(task, folder=folder, deadline=deadline)
        loop = asyncio.get_running_loop()
        call = loop.run_in_executor(self.threads, worker.call, task)
        try:
            reply = await asyncio.wait_for(asyncio.shield(call), max(deadline - time.monotonic(), 0))
        except (TimeoutError, asyncio.CancelledError) as err:
            self.abandon(worker, call, folder)
            if isinstance(err, TimeoutError):
                raise Timeout("deadline passed while the strip was analysed; the analysis was stopped") from None
            raise
        except (EOFError, OSError):
            remove(folder)
            self.retire(worker)
            self.spawn()
            raise WorkerFailed("the strip worker stopped unexpectedly; it was replaced, retry") from None
        remove(folder)
        self.returned(worker)
        status = reply[0]
        if status == "ok":
            return reply[1]
        if status == "strip":
            raise StripRejected(*reply[1:])
        if status == "invalid":
            raise BodyInvalid(reply[1])
        if status == "late":
            raise Timeout("deadline passed while the strip was analysed; the analysis was stopped")
        log.error("strip analysis failed: %s", reply[1])
        raise WorkerFailed("strip analysis failed unexpectedly; the server logged it")


def remove(folder: str | None) -> None:
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


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

    serve_tasks(Connection(int(sys.argv[1])), int(sys.argv[2]) if len(sys.argv) > 2 else 0)
