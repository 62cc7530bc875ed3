"""Dynamic batching across concurrent requests, the way Triton's and MLServer's batchers work:
requests for one model wait in a bounded queue and are run together, so 64 clients sending one
beat each cost a few solves, not 64.

- Bounded: past `max_queued_beats` waiting beats a request is refused at once (Overloaded, a 503),
  never queued without end.
- Prompt: a batch leaves as soon as it is full, or when every inference request the server has
  accepted is already queued (a lone client waits for nobody), and at the latest `max_wait_s`
  after its first request arrived.
- Exact: only requests with the same solver settings share a batch; each beat is solved on its
  own (service.models.fastode), so a beat's answer does not depend on its batch, and a beat whose solve
  fails fails only its own request.
- Deadlines: a request whose deadline passes while it waits is dropped from the queue (Timeout, a
  504); one that is being computed gets its 504 at the deadline, and its result is discarded. A
  batch with other than the model's default solver settings (a tight tolerance may cost many times
  more) is computed in slices of CANCEL_SLICE beats, and stops once none of its requests is still
  awaited: a batch whose requests all got their 504 (or whose clients left) stops computing.

One batch per model runs at a time. A large one runs in a thread of its own: onnxruntime and the
compiled solver release the GIL, so the event loop keeps parsing and answering meanwhile. A small
one runs on the event loop itself: a single beat, or at most `inline_beats` (ECG_INLINE_BATCH_BEATS)
with the model's default solver settings (a tighter tolerance may cost many times more). 64 beats
take about a millisecond, less than handing them to a thread and back, and the two threads no
longer trade the GIL (measured, 64 clients sending one context beat each to the ODE-Net: 2,190/s with
p99 39 ms through the thread, 2,900/s with p99 25 ms inline; one client: 630/s through the thread,
800/s inline).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from service.models.fastode import failure
from service.models.solver import SolverConfig
from service.models.predictors import Prediction


CANCEL_SLICE = 32  # beats computed between two checks whether a costly batch is still awaited


class Overloaded(RuntimeError):
    """The queue is full: the request is refused without waiting (503 with Retry-After)."""


class Timeout(RuntimeError):
    """The request's deadline passed before its result was ready (504)."""


class Arrivals:
    """Inference requests the server has accepted that will soon be queued (still being read or
    validated). A batcher waits for them only while there are any."""

    def __init__(self):
        self.count = 0
        self.changed = asyncio.Event()

    def ticket(self) -> "Ticket":
        self.count += 1
        return Ticket(self)


class Ticket:
    """One request's place among the arrivals; `done()` (idempotent) when it is queued, when it
    will not reach a batcher soon (a strip being analysed), or when it ends."""

    def __init__(self, arrivals: Arrivals):
        self.arrivals: Arrivals | None = arrivals

    def done(self) -> None:
        if self.arrivals is not None:
            self.arrivals.count -= 1
            self.arrivals.changed.set()
            self.arrivals = None


@dataclass(eq=False)
class Job:
    inputs: np.ndarray
    solver: SolverConfig | None
    deadline: float  # time.monotonic()
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)
    waiting: bool = True  # counted in queued_beats; abandoned jobs stay in the queue until taken


class ModelBatcher:
    """The queue and the batch loop of one model's predictor."""

    def __init__(self, name: str, predictor, arrivals: Arrivals, metrics, max_batch: int = 256,
                 max_wait_s: float = 0.0015, max_queued_beats: int = 8192, inline_beats: int = 64,
                 default_solver: SolverConfig | None = None):
        self.name, self.predictor, self.arrivals = name, predictor, arrivals
        self.max_batch, self.max_wait_s, self.max_queued_beats = max_batch, max_wait_s, max_queued_beats
        self.inline_beats, self.default_solver = inline_beats, default_solver
        self.queue: deque[Job] = deque()
        self.queued_beats = 0
        self.wakeup = asyncio.Event()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"predict-{name}")
        self.waits = metrics.queue_wait.labels(name)  # this model's histograms, looked up once
        self.sizes = metrics.batch_size.labels(name)
        self.latencies = metrics.inference_latency.labels(name)
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        self.executor.shutdown(wait=True)

    async def predict(self, inputs: np.ndarray, solver: SolverConfig | None, deadline: float) -> Prediction:
        """Queue `inputs` and wait for their share of a batch (or Overloaded / Timeout / SolverError)."""
        if self.queued_beats + len(inputs) > self.max_queued_beats:
            raise Overloaded(f"model {self.name!r} has {self.queued_beats} beats waiting "
                             f"(limit {self.max_queued_beats})")
        loop = asyncio.get_running_loop()
        job = Job(inputs, solver, deadline, loop.create_future())
        self.queue.append(job)
        self.queued_beats += len(inputs)
        self.wakeup.set()
        timer = loop.call_later(max(deadline - time.monotonic(), 0), self.expire, job)
        try:
            return await job.future
        finally:  # deadline passed or client gone: make room for others, drop the result
            timer.cancel()
            if not job.future.done():
                job.future.cancel()
            self.release(job)  # a no-op for a job already taken into a batch

    def expire(self, job: Job) -> None:
        if not job.future.done():
            job.future.set_exception(Timeout(f"deadline passed after {time.monotonic() - job.enqueued:.3f} s "
                                             f"in model {self.name!r}"))

    def release(self, job: Job) -> None:
        if job.waiting:
            job.waiting = False
            self.queued_beats -= len(job.inputs)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            while self.queue:
                await self.gather(loop)
                batch = self.take()
                if batch:
                    await self.execute(batch, loop)

    async def gather(self, loop) -> None:
        """Wait, at most max_wait_s after the oldest request, for requests still arriving."""
        first = self.queue[0]
        while self.arrivals.count > 0 and self.queued_beats < self.max_batch:
            remaining = first.enqueued + self.max_wait_s - time.monotonic()
            if remaining <= 0:
                break
            self.arrivals.changed.clear()
            try:
                await asyncio.wait_for(self.arrivals.changed.wait(), remaining)
            except TimeoutError:
                break

    def take(self) -> list[Job]:
        """The oldest live request and the queued ones with its solver settings, up to max_batch
        beats, in one pass; abandoned requests leave the queue here."""
        live = [job for job in self.queue if not job.future.done()]
        batch, rest, beats = [], deque(), 0
        key = live[0].solver if live else None
        for job in live:
            if job.solver == key and (not batch or beats + len(job.inputs) <= self.max_batch):
                batch.append(job)
                beats += len(job.inputs)
                self.release(job)
            else:
                rest.append(job)
        self.queue = rest
        return batch

    async def execute(self, batch: list[Job], loop) -> None:
        started = time.monotonic()
        for job in batch:
            self.waits.observe(started - job.enqueued)
        inputs = batch[0].inputs if len(batch) == 1 else np.concatenate([j.inputs for j in batch])
        solver = batch[0].solver
        try:
            if len(inputs) == 1 or (len(inputs) <= self.inline_beats and solver == self.default_solver):
                # cheaper inline than through the thread (module docstring)
                result = self.predictor.predict(inputs, solver)
            else:
                result = await self.in_thread(inputs, solver, batch, loop)
                if result is None:  # nobody awaits any of it any more
                    return
        except Exception as err:  # a broken predictor fails this batch's requests, not the loop
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(err)
            return
        self.sizes.observe(len(inputs))
        self.latencies.observe(result.seconds)
        failed = result.status is not None and result.status.any()
        start = 0
        for job in batch:
            part = result.part(start, start + len(job.inputs))
            start += len(job.inputs)
            if job.future.done():
                continue
            error = failure(part.status, solver) if failed else None
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(part)

    async def in_thread(self, inputs: np.ndarray, solver: SolverConfig | None, batch: list[Job],
                        loop) -> Prediction | None:
        """The batch in the model's thread; a costly one (module docstring) slice by slice, None as
        soon as none of its requests is awaited."""
        if solver == self.default_solver or len(inputs) <= CANCEL_SLICE:
            return await loop.run_in_executor(self.executor, self.predictor.predict, inputs, solver)
        parts = []
        for start in range(0, len(inputs), CANCEL_SLICE):
            if all(job.future.done() for job in batch):
                return None
            parts.append(await loop.run_in_executor(self.executor, self.predictor.predict,
                                                    inputs[start:start + CANCEL_SLICE], solver))
        return joined(parts)


def joined(parts: list[Prediction]) -> Prediction:
    """Slices of one batch's prediction, in order, as one."""
    def stack(arrays):
        return None if arrays[0] is None else np.concatenate(arrays)

    return Prediction(np.concatenate([p.probabilities for p in parts]), stack([p.nfe for p in parts]),
                      sum(p.seconds for p in parts), stack([p.status for p in parts]))
