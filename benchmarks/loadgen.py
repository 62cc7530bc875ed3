"""Load from wrk (Debian package wrk): a C load generator, so the client does not compete with the
server for a Python interpreter. Closed loop: each connection sends its next request when the last
one is answered (optionally after a pause), cycling through prepared request bodies (JSON or
binary); answers are counted as errors (status 400 and above, as wrk counts them) or not, or one by
one by status."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

LUA = r"""
local index, data = {}, nil
do
  local f = io.open(os.getenv("BODIES"), "rb"); data = f:read("*a"); f:close()
  for line in io.lines(os.getenv("BODIES") .. ".idx") do
    local offset, length, header = line:match("(%d+) (%d+) (%d+)")
    table.insert(index, {tonumber(offset), tonumber(length), tonumber(header)})
  end
end
local path, deadline = os.getenv("TARGET_PATH"), os.getenv("DEADLINE")
local pace_ms, content_type = tonumber(os.getenv("PACE_MS") or "0"), os.getenv("CONTENT_TYPE")
local i = 0
local requests = {}
counts = {}
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  for _, entry in ipairs(index) do
    local headers = {["Content-Type"] = content_type}
    if deadline ~= "" then headers["X-Request-Timeout"] = deadline end
    if entry[3] > 0 then headers["Inference-Header-Content-Length"] = tostring(entry[3]) end
    table.insert(requests, wrk.format("POST", path, headers, data:sub(entry[1] + 1, entry[1] + entry[2])))
  end
end
function request()
  i = i % #requests + 1
  return requests[i]
end
if pace_ms > 0 then
  function delay() return pace_ms end
end
if os.getenv("COUNT_STATUSES") == "1" then
  function response(status, headers, body) counts[status] = (counts[status] or 0) + 1 end
end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for status, count in pairs(t:get("counts")) do total[status] = (total[status] or 0) + count end
  end
  local parts = {}
  for status, count in pairs(total) do table.insert(parts, string.format('"%d": %d', status, count)) end
  local e = summary.errors
  io.write(string.format('RESULT {"statuses": {%s}, "error_statuses": %d, "socket_errors": %d, "requests": %d, ' ..
    '"seconds": %.3f, "p50_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f}\n', table.concat(parts, ", "), e.status,
    e.connect + e.read + e.write + e.timeout, summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
"""


@dataclass(frozen=True)
class Load:
    statuses: dict[int, int]  # per status, when counted (count_statuses)
    error_statuses: int  # answers with a status of 400 or above
    socket_errors: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def ok(self) -> int:
        """Answers with a status below 400."""
        return self.requests - self.error_statuses

    def rate(self, status: int | None = None) -> float:
        """Answers per second: those below 400, or those with `status` (count_statuses)."""
        return (self.ok if status is None else self.statuses.get(status, 0)) / self.seconds


class Bodies:
    """Request bodies for wrk: each a JSON body, or a JSON header with binary data after it."""

    def __init__(self, bodies: list[bytes | tuple[bytes, bytes]], content_type: str = "application/json"):
        self.content_type = content_type
        handle = tempfile.NamedTemporaryFile(suffix=".bin", delete=False)
        offset, lines = 0, []
        for body in bodies:
            header_length = 0
            if isinstance(body, tuple):
                header_length, body = len(body[0]), body[0] + body[1]
            handle.write(body)
            lines.append(f"{offset} {len(body)} {header_length}")
            offset += len(body)
        handle.close()
        self.path = handle.name
        with open(self.path + ".idx", "w") as index:
            index.write("\n".join(lines) + "\n")

    def remove(self) -> None:
        for path in (self.path, self.path + ".idx"):
            if os.path.exists(path):
                os.unlink(path)


def available() -> bool:
    return shutil.which("wrk") is not None


def run(url: str, path: str, bodies: Bodies, connections: int, seconds: float, deadline_s: float | None = None,
        pace_ms: float = 0.0, count_statuses: bool = False) -> Load:
    """wrk against url + path for `seconds` with `connections` connections, one thread. Requests are
    formatted once, up front, and responses are parsed in Lua only to count statuses one by one
    (count_statuses): the client's share of the machine's two cores stays small."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(LUA)
    env = {**os.environ, "BODIES": bodies.path, "TARGET_PATH": path, "CONTENT_TYPE": bodies.content_type,
           "DEADLINE": "" if deadline_s is None else f"{deadline_s:g}", "PACE_MS": f"{pace_ms:g}",
           "COUNT_STATUSES": "1" if count_statuses else "0"}
    try:
        out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "30s",
                              "-s", script.name, url], env=env, capture_output=True, text=True)
    finally:
        os.unlink(script.name)
    match = re.search(r"^RESULT (.*)$", out.stdout, re.M)
    if not match:
        raise RuntimeError(f"wrk failed: {out.stdout}{out.stderr}")
    result = json.loads(match.group(1))
    result["statuses"] = {int(k): v for k, v in result["statuses"].items()}
    return Load(**result)
