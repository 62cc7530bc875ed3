"""Server processes: one uvicorn server per process, draining gracefully on SIGTERM or Ctrl-C,
and, for more than one core, ECG_WORKERS such processes listening on one port.

Draining, per server process:
1. readiness (/readyz, /v2/health/ready) turns 503 at once, so load balancers stop sending;
2. for ECG_SHUTDOWN_DELAY_S seconds the server still accepts and serves (default 0);
3. the listener closes (new connections are refused) and accepted requests finish, for at most
   ECG_DRAIN_TIMEOUT_S seconds; then the models and strip workers stop.
A second signal during the delay skips straight to step 3; one during step 3 stops at once (as
uvicorn does).

With ECG_WORKERS > 1 the parent holds the port (a taken port stops it at once), starts the
workers, passes SIGTERM and SIGINT on to each of them, replaces a worker that dies (unless it dies
while starting: then the service stops, as it would fail again), and exits when all have drained.
Each worker loads the models and listens on the port with SO_REUSEPORT, so the kernel spreads new
connections over them by a hash of each (64 connections split 25/39 to 30/34; one socket shared
by all split them 49/19: whichever worker was idle took them). Each has its own dynamic batcher,
in-flight bound and strip workers.
The Prometheus metrics are gathered across workers (prometheus-client's multiprocess mode, in a
temporary folder removed at exit), so any worker's /metrics reports the whole service.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time

import uvicorn

from service.settings import Settings

log = logging.getLogger("service")
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client reads it when it is imported
STARTUP_S = 60.0  # a worker that dies sooner after its start is not replaced: the service stops


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


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port with SO_REUSEPORT, which every worker binds alike (IPv6 for
    a host with a colon, as uvicorn decides)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def serve(settings: Settings, parent_pid: int | None = None) -> None:
    """One server process: the app and its uvicorn server; a worker (parent_pid given) listens on
    its own SO_REUSEPORT socket."""
    from service.app import create_app  # in a worker, after the parent set the metrics folder

    logging.basicConfig(level=settings.log_level.upper(), format="%(message)s")
    if parent_pid is not None:
        os.setpgrp()  # Ctrl-C reaches the parent alone, which passes it on once
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                            access_log=False, timeout_graceful_shutdown=settings.drain_timeout_s)
    sockets = None if parent_pid is None else [reuse_port_socket(settings.host, settings.port)]
    DrainingServer(config, app, settings.shutdown_delay_s, parent_pid).run(sockets=sockets)


class Workers:
    """ECG_WORKERS server processes on one port; see the module's docstring."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.context = multiprocessing.get_context("spawn")  # a fresh interpreter: no state shared by fork
        self.processes: list = []
        self.stopping = self.failed = False

    def start_worker(self):
        process = self.context.Process(target=serve, args=(self.settings, os.getpid()),
                                       name="ecg-worker", daemon=False)
        process.start()
        process.started = time.monotonic()
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
        try:  # held, not listening, for the life of the service: the port is ours, or we stop here
            held = reuse_port_socket(settings.host, settings.port)
        except OSError as err:
            log.error(f"cannot listen on {settings.host}:{settings.port}: {err}")
            return 1
        owned_dir = MULTIPROCESS_DIR not in os.environ
        if owned_dir:
            os.environ[MULTIPROCESS_DIR] = tempfile.mkdtemp(prefix="ecg-metrics-")
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        try:
            self.processes = [self.start_worker() for _ in range(settings.workers)]
            log.info(f"serving on {settings.host}:{settings.port} with {settings.workers} worker processes")
            while any(p.is_alive() for p in self.processes) or not self.stopping:
                for i, process in enumerate(self.processes):
                    if not process.is_alive() and not self.stopping:
                        self.mark_dead(process.pid)
                        if time.monotonic() - process.started < STARTUP_S:  # it would fail again
                            log.error(f"worker {process.pid} exited with {process.exitcode} while starting; "
                                      "stopping the service")
                            self.stop(signal.SIGTERM, None)
                            self.failed = True
                            continue
                        log.error(f"worker {process.pid} exited with {process.exitcode}; starting another")
                        self.processes[i] = self.start_worker()
                time.sleep(0.2)
            for process in self.processes:
                process.join()
            return 1 if self.failed else 0
        finally:
            held.close()
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
