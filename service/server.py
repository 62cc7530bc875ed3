"""Server processes: one uvicorn server per process, draining gracefully on SIGTERM or Ctrl-C,
and, for more than one core, ECG_WORKERS such processes listening on one port.

Before any route, the HTTP layer itself (GuardedHttp, uvicorn's httptools protocol) holds what a
client could otherwise hold without end: a request's line and headers are at most
ECG_MAX_HEADER_BYTES in ECG_MAX_HEADER_COUNT fields (else 431, counted while they arrive, so a
flood is cut off at the limit, not buffered), they must arrive within ECG_HEADER_TIMEOUT_S (else
408), and a process holds at most ECG_MAX_CONNECTIONS connections (one more gets a 503 and is
closed). Bodies are timed by the app (service.admission.middleware).

Draining, per server process:
1. readiness (/readyz, /v2/health/ready) turns 503 at once, so load balancers stop sending, and
   every answer from then on closes its connection;
2. for ECG_SHUTDOWN_DELAY_S seconds the server still accepts and serves (default 0);
3. the connections already waiting in the listen queue are accepted, then the listener closes (new
   connections are refused, never reset); for DRAIN_GRACE_S requests already sent on open
   connections are still read and answered (and close after their answers); a kept-alive
   connection closes once idle for IDLE_GRACE_S (its client is then not sending: closing it races
   no request), at most until the keep-alive timeout; accepted requests finish, for at most
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

import asyncio
import functools
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.settings import Settings

log = logging.getLogger("service")
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client reads it when it is imported
STARTUP_S = 60.0  # a worker that dies sooner after its start is not replaced: the service stops
DRAIN_GRACE_S = 0.25  # after the listener closes: requests already on the wire are still read and answered
IDLE_GRACE_S = 0.5  # draining: a kept-alive connection idle this long is closed (its client is not sending)
LINGER_S = 2.0  # a refused connection is read (and dropped) this long before it closes


def raw_response(status: str, detail: str, extra: bytes = b"") -> bytes:
    """A whole HTTP/1.1 answer that closes its connection, for refusals before any request exists."""
    body = orjson.dumps({"detail": detail})
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n").encode() + extra + b"\r\n" + body


class GuardedHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol with limits on what a client may hold (module docstring).
    httptools buffers a header field whole before handing it over, so bytes are counted as they
    arrive, and the parsed headers are measured again when they are complete."""

    def __init__(self, *args, limits: Settings, **kwargs):
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.in_headers, self.header_bytes, self.header_count, self.refused = True, 0, 0, False
        self.begun = False  # a byte of the current request has arrived
        self.idle_since: float | None = None  # loop time since when no request is under way
        self.body_bytes_fed = 0
        self.header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.idle_since = self.loop.time()
        if len(self.connections) > self.limits.max_connections:
            self.refuse("503 Service Unavailable", f"too many connections (limit {self.limits.max_connections})",
                        b"retry-after: 1\r\n")
            return
        self.arm_header_timer()

    def connection_lost(self, exc) -> None:
        self.disarm_header_timer()
        super().connection_lost(exc)

    def arm_header_timer(self) -> None:
        if self.header_timer is None:
            self.header_timer = self.loop.call_later(self.limits.header_timeout_s, self.header_timed_out)

    def disarm_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def header_timed_out(self) -> None:
        self.header_timer = None
        if self.in_headers and not self.begun and not self.transport.is_closing():
            self.transport.close()  # not a byte sent: nothing to answer
        elif self.in_headers and not self.transport.is_closing():
            self.refuse("408 Request Timeout", f"request headers not received within "
                        f"{self.limits.header_timeout_s:g} s")

    def refuse(self, status: str, detail: str, extra: bytes = b"") -> None:
        """Answer and close; what the client still sends is read and dropped for LINGER_S, so it
        reads the answer instead of a reset."""
        self.refused = True
        self.disarm_header_timer()
        if not self.transport.is_closing():
            self.transport.write(raw_response(status, detail, extra))
            if self.transport.can_write_eof():
                self.transport.write_eof()
                self.loop.call_later(LINGER_S, self.transport.close)
            else:
                self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        self.body_bytes_fed = 0
        super().data_received(data)
        if self.in_headers and not self.refused:
            self.header_bytes += len(data) - self.body_bytes_fed
            if self.header_bytes > self.limits.max_header_bytes:
                self.refuse("431 Request Header Fields Too Large",
                            f"request headers larger than {self.limits.max_header_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_headers, self.header_count, self.begun = True, 0, True
        self.idle_since = None
        self.arm_header_timer()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        if self.header_count <= self.limits.max_header_count:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.disarm_header_timer()
        self.in_headers, self.header_bytes = False, 0
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if self.header_count > self.limits.max_header_count or size > self.limits.max_header_bytes:
            limit = (f"{self.limits.max_header_count} header fields" if self.header_count > self.limits.max_header_count
                     else f"{self.limits.max_header_bytes} bytes of request line and headers")
            return self.refuse("431 Request Header Fields Too Large", f"request headers over the limit of {limit}")
        super().on_headers_complete()
        if getattr(self.server_state, "draining", False) and self.cycle is not None:
            self.cycle.keep_alive = False  # draining: this answer closes its connection

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.idle_since = self.loop.time()

    def on_body(self, body: bytes) -> None:
        self.body_bytes_fed += len(body)
        if not self.refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self.refused:
            super().on_message_complete()
        self.in_headers, self.begun = True, False


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app, delay_s: float, parent_pid: int | None = None):
        super().__init__(config)
        self.app_state, self.delay_s, self.parent_pid = app.state, delay_s, parent_pid
        self.signal: int | None = None
        self.draining_since: float | None = None

    def handle_exit(self, sig, frame) -> None:
        if self.draining_since is None:
            self.app_state.draining = True
            self.server_state.draining = True  # GuardedHttp: answers from now on close their connection
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

    async def shutdown(self, sockets=None) -> None:
        """Step 3 of draining (module docstring): the listen queue accepted before the listener
        closes, so no connection that the kernel took is reset; then a grace for requests on the wire."""
        self.server_state.draining = True
        waiting = [conn for server in self.servers for listener in server.sockets for conn in backlog(listener)]
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        loop = asyncio.get_running_loop()
        protocol = functools.partial(self.config.http_protocol_class, config=self.config,
                                     server_state=self.server_state, app_state=self.lifespan.state)
        for conn in waiting:
            await loop.connect_accepted_socket(protocol, conn)
        if waiting:
            log.info("draining: accepted %d waiting connections before closing the listener", len(waiting))
        await self.close_idle_connections(loop)
        await super().shutdown(sockets=None)

    async def close_idle_connections(self, loop) -> None:
        """Close each kept-alive connection once it has been idle for IDLE_GRACE_S: a client that
        just had an answer may be sending its next request (answered, then closed), and one idle
        that long is not about to; at most until the keep-alive timeout, when uvicorn would close
        them anyway."""
        await asyncio.sleep(DRAIN_GRACE_S)
        end = loop.time() + self.config.timeout_keep_alive
        while loop.time() < end:
            idle = [c for c in self.server_state.connections if getattr(c, "idle_since", None) is not None]
            if not idle:
                return
            for connection in idle:
                if loop.time() - connection.idle_since >= IDLE_GRACE_S and not connection.transport.is_closing():
                    connection.transport.close()
            await asyncio.sleep(0.05)


def backlog(listener) -> list[socket.socket]:
    """Every connection waiting in a listening socket's queue, accepted now (without blocking)."""
    waiting = []
    with socket.socket(fileno=os.dup(listener.fileno())) as sock:
        sock.setblocking(False)
        while True:
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return waiting
            except OSError:
                return waiting
            conn.setblocking(False)
            waiting.append(conn)


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
                            access_log=False, timeout_graceful_shutdown=settings.drain_timeout_s,
                            http=functools.partial(GuardedHttp, limits=settings))
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


def main(argv: list[str] | None = None) -> None:
    import argparse

    settings_help = "\n".join(f"  ECG_{name.upper():<24} {field.description or ''}"
                              for name, field in Settings.model_fields.items())
    argparse.ArgumentParser(
        prog="ecg-serve", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve the ECG beat classifiers over HTTP (uvicorn), with the models in ECG_MODELS_DIR.",
        epilog=f"settings, from the environment or a .env file:\n{settings_help}").parse_args(argv)
    settings = Settings()
    if settings.workers > 1:
        raise SystemExit(Workers(settings).run())
    serve(settings)
