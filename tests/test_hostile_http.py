"""Hostile and careless clients at the HTTP layer, on a real uvicorn over real sockets: header
floods, slow headers and bodies, too many connections, clients that leave mid-body. Each must cost
the service a bounded amount of memory and time, and never the places of well-behaved clients."""

import socket
import threading
import time

import httpx
import pytest

from conftest import served

HEADER_TIMEOUT_S, BODY_TIMEOUT_S = 2.0, 3.0


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def read_answer(sock: socket.socket, seconds: float) -> bytes:
    """What the server sends before closing (or `seconds` pass)."""
    sock.settimeout(seconds)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


@pytest.fixture(scope="module")
def server():
    with served(header_timeout_s=HEADER_TIMEOUT_S, body_timeout_s=BODY_TIMEOUT_S, max_requests_in_flight=16,
                max_connections=200) as (base, process):
        yield base, int(base.rsplit(":", 1)[1]), process


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


@pytest.mark.parametrize("headers", [
    [b"X-Flood-%06d: %s" % (i, b"a" * 1000) for i in range(8 * 1024)],  # 8 MiB of 1 KB headers
    [b"X-Big: " + b"b" * (8 << 20)],  # one 8 MiB header value
    [b"X-Many-%d: 1" % i for i in range(300)],  # 300 small headers (about 4 KB)
], ids=["8MiB-of-headers", "one-8MiB-value", "300-headers"])
def test_header_floods_get_431_before_any_route_and_cost_no_memory(server, headers):
    base, port, process = server
    before = rss_mib(process.pid)
    with connect(port) as sock:
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n" + b"\r\n".join(headers) + b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while the flood was still being sent
        answer = read_answer(sock, 10)
    assert status_of(answer) == 431, answer[:200]
    assert b"connection: close" in answer.lower()
    assert rss_mib(process.pid) - before < 50
    assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200


def test_headers_sent_too_slowly_get_408_and_idle_connections_close(server):
    _, port, _ = server
    with connect(port) as partial, connect(port) as silent:
        partial.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
        started = time.monotonic()
        assert status_of(read_answer(partial, 4 * HEADER_TIMEOUT_S)) == 408
        assert read_answer(silent, 4 * HEADER_TIMEOUT_S) == b""  # closed without a word
        assert time.monotonic() - started < 4 * HEADER_TIMEOUT_S  # closed, not left to the read's own limit


def trickle(port: int, answers: list, stop: threading.Event) -> None:
    """A /predict whose body comes one byte every 0.2 s (it would take 200 s)."""
    try:
        with connect(port) as sock:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000\r\n\r\n")
            sock.settimeout(0.2)
            answer = b""
            while not stop.is_set():
                try:
                    sock.sendall(b" ")
                    chunk = sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not chunk:
                    break
                answer += chunk
            answers.append(answer)
    except OSError as err:
        answers.append(repr(err).encode())


def test_trickling_uploads_are_cut_off_and_never_take_the_places_of_others(server, fixture_beats):
    """64 uploads trickling their bodies, with only 16 requests allowed in flight: a normal
    /predict still gets its 200 within its deadline, and every trickler gets a 408 once the body
    timeout passes."""
    base, port, _ = server
    answers: list[bytes] = []
    stop = threading.Event()
    threads = [threading.Thread(target=trickle, args=(port, answers, stop)) for _ in range(64)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)  # every trickler is connected and sending
        body = {"beats": fixture_beats.beats[:4].tolist()}
        for _ in range(5):
            response = httpx.post(f"{base}/predict", json=body, headers={"X-Request-Timeout": "2"}, timeout=2.5)
            assert response.status_code == 200, response.text
        for thread in threads:
            thread.join(timeout=BODY_TIMEOUT_S + 10)
    finally:
        stop.set()
    assert len(answers) == 64
    assert all(status_of(a) == 408 for a in answers), {a[:60] for a in answers}
    assert b"request body not received within 3 s" in answers[0]


def test_connections_past_the_cap_are_refused_at_once(server):
    base, port, _ = server
    held = [connect(port) for _ in range(200)]
    try:
        time.sleep(0.5)
        with connect(port) as extra:
            assert status_of(read_answer(extra, 5)) == 503
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.5)
    assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200


def leave_mid_body(port: int, path: str) -> None:
    with connect(port) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     "Content-Length: 100000\r\n\r\n".encode() + b"[" * 5000)
        time.sleep(0.2)


def test_a_client_that_leaves_mid_body_is_not_a_server_error(fixture_beats):
    with served(log_level="info") as (base, process):
        port = int(base.rsplit(":", 1)[1])
        for path in ("/predict", "/predict/strip", "/predict/fhir", "/v2/models/odenet/infer"):
            for _ in range(3):
                leave_mid_body(port, path)
        time.sleep(1.0)
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
    lines = [line for line in metrics.splitlines() if line.startswith("ecg_http_request_duration_seconds_count")]
    assert not [line for line in lines if 'status="500"' in line], lines
    assert sum(float(line.rsplit(" ", 1)[1]) for line in lines if 'status="499"' in line) == 12
    assert "unexpected error" not in process.output and "Traceback" not in process.output
