"""Server processes: one uvicorn server per process, draining gracefully on SIGTERM or Ctrl-C,
and, for more than one core, ECG_WORKERS such processes accepting on one listening socket.

Draining, per server process:
1. readiness (/readyz, /v2/health/ready) turns 503 at once, so load balancers stop sending;
2. for ECG_SHUTDOWN_DELAY_S seconds the server still accepts and serves (default 0);
3. the listener closes (new connections are refused) and accepted requests finish, for at most
   ECG_DRAIN_TIMEOUT_S seconds; then the models and strip workers stop.
A second signal during the delay skips straight to step 3; one during step 3 stops at once (as
uvicorn does).

With ECG_WORKERS > 1 the parent binds the socket, starts the workers (each loads the models and
serves; the kernel spreads connections among them), passes SIGTERM/SIGINT on to every worker once,
replaces a worker that dies, and exits when all have drained. Each worker has its own dynamic
batcher, in-flight bound and strip workers. The Prometheus metrics are gathered across workers
(prometheus-client's multiprocess mode, in a temporary folder removed at exit), so any worker's
/metrics reports the whole service.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import time

import uvicorn

from service.settings import Settings

log = logging.getLogger("service")
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client reads it when it is imported


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app, delay_s: float, parent_pid: int | None = None):
        super().__init__(config)
        self.app_state, self.delay_s, self.parent_pid = app.state, delay_s, parent_pid
        self.signal: int | None = None
        self.draining_since: float | None = None

    def handle_exit(self, sig, frame) -> None:
        if self.draining_since is None:
            self.app_state.draining = True
            self.draining_since, self.signal = time.monotonic(), sig
            if self.delay_s > 0:
                log.info("draining: ready 503, closing in %.1f s", self.delay_s)
                return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.parent_pid is not None and self.draining_since is None and os.getppid() != self.parent_pid:
            log.warning("the parent process is gone: draining")  # a worker never outlives its parent
            self.handle_exit(signal.SIGTERM, None)
        if (self.draining_since is not None and not self.should_exit
                and time.monotonic() - self.draining_since >= self.delay_s):
            super().handle_exit(self.signal, None)
        return await super().on_tick(counter)


def serve(settings: Settings, sockets=None, parent_pid: int | None = None) -> None:
    """One server process: the app and its uvicorn server, on `sockets` when given (a worker)."""
    from service.app import create_app  # in a worker, after the parent set the metrics folder

    logging.basicConfig(level=settings.log_level.upper(), format="%(message)s")
    if parent_pid is not None:
        os.setpgrp()  # Ctrl-C reaches the parent alone, which passes it on once
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                            access_log=False, timeout_graceful_shutdown=settings.drain_timeout_s)
    DrainingServer(config, app, settings.shutdown_delay_s, parent_pid).run(sockets=sockets)


class Workers:
    """ECG_WORKERS server processes on one listening socket; see the module's docstring."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.context = multiprocessing.get_context("spawn")  # a fresh interpreter: no state shared by fork
        self.processes: list = []
        self.stopping = False

    def start_worker(self, sockets):
        process = self.context.Process(target=serve, args=(self.settings, sockets, os.getpid()),
                                       name="ecg-worker", daemon=False)
        process.start()
        return process

    def stop(self, sig, frame) -> None:
        if not self.stopping:
            self.stopping = True
            log.info("stopping %d workers", len(self.processes))
        for process in self.processes:  # a second signal is passed on too: the workers stop sooner
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)

    def run(self) -> int:
        settings = self.settings
        logging.basicConfig(level=settings.log_level.upper(), format="%(message)s")
        owned_dir = MULTIPROCESS_DIR not in os.environ
        if owned_dir:
            os.environ[MULTIPROCESS_DIR] = tempfile.mkdtemp(prefix="ecg-metrics-")
        sockets = [uvicorn.Config("service.app:create_app", host=settings.host, port=settings.port).bind_socket()]
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        try:
            self.processes = [self.start_worker(sockets) for _ in range(settings.workers)]
            log.info(f"serving on {settings.host}:{settings.port} with {settings.workers} worker processes")
            while any(p.is_alive() for p in self.processes) or not self.stopping:
                for i, process in enumerate(self.processes):
                    if not process.is_alive() and not self.stopping:
                        self.mark_dead(process.pid)
                        log.error(f"worker {process.pid} exited with {process.exitcode}; starting another")
                        self.processes[i] = self.start_worker(sockets)
                time.sleep(0.2)
            for process in self.processes:
                process.join()
            return 0
        finally:
            for sock in sockets:
                sock.close()
            if owned_dir:
                shutil.rmtree(os.environ.pop(MULTIPROCESS_DIR), ignore_errors=True)

    @staticmethod
    def mark_dead(pid: int) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # its live gauges (requests in flight) stop counting


def main() -> None:
    settings = Settings()
    if settings.workers > 1:
        raise SystemExit(Workers(settings).run())
    serve(settings)
