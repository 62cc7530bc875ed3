"""Service settings, read from the environment (prefix ECG_) or a .env file; defaults documented."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1 << 20


class Settings(BaseSettings):
    """Every field can be set as ECG_<NAME>, e.g. ECG_MODELS_DIR=/srv/models."""

    model_config = SettingsConfigDict(env_prefix="ECG_", env_file=".env", extra="ignore")

    models_dir: Path = Field(Path("models"), description="folder of artefact folders (each with card.json)")
    host: str = Field("127.0.0.1", description="interface to listen on (0.0.0.0 in containers)")
    port: int = Field(8000, ge=1, le=65535)
    log_level: str = Field("info", pattern="^(critical|error|warning|info|debug)$")
    default_model: str = Field("odenet", description="model for 187-sample beats when a request names none")
    default_context_model: str = Field("context-odenet", description="model for context beats and whole strips "
                                       "when a request names none")
    max_beats_per_request: int = Field(1024, ge=1, description="larger batches get a 422")
    max_batch_beats: int = Field(256, ge=1, description="dynamic batching: most beats one batch gathers")
    max_batch_wait_ms: float = Field(1.5, ge=0, description="dynamic batching: longest wait for more requests")
    inline_batch_beats: int = Field(64, ge=0, description="dynamic batching: batches of at most this many beats "
                                    "with the model's default solver run on the event loop, others in the "
                                    "model's thread")
    max_queued_beats: int = Field(16384, ge=1, description="beats waiting per model; past it a 503")
    request_timeout_s: float = Field(30.0, gt=0, description="deadline of a request that sets none (504 past it)")
    max_request_timeout_s: float = Field(300.0, gt=0, description="longest deadline X-Request-Timeout may ask")
    retry_after_s: float = Field(1.0, gt=0, description="Retry-After of a 503")
    max_requests_in_flight: int = Field(256, ge=1, description="requests being served at once (health and "
                                        "metrics aside); past it a 503")
    max_body_bytes: int = Field(64 * 1024, ge=0, description="body limit of routes not named below (413 past it)")
    predict_body_bytes: int = Field(8 * MiB, ge=0, description="body limit of /predict and /v2 inference")
    strip_body_bytes: int = Field(96 * MiB, ge=0, description="body limit of /predict/strip and /predict/fhir")
    upload_body_bytes: int = Field(80 * MiB, ge=0, description="body limit of /predict/wfdb")
    workers: int = Field(1, ge=1, le=64, description="server processes on the one port, each with its own "
                         "models, batcher and in-flight bound (one per core serves the most)")
    strip_workers: int = Field(1, ge=1, description="processes that analyse strips (per server process)")
    max_waiting_strips: int = Field(8, ge=0, description="strips waiting for a worker; past it a 503")
    strip_worker_rss_mib: int = Field(512, ge=64, description="a strip worker whose memory (RSS) is above this "
                                      "after a strip, once freed memory is handed back, is replaced")
    strip_worker_memory_mib: int = Field(2048, ge=0, description="cap on a strip worker's data memory "
                                         "(RLIMIT_DATA; 0: none): a strip needing more is a 422")
    strip_overrun_s: float = Field(30.0, ge=0, description="a strip whose deadline passed keeps its worker until "
                                   "the analysis ends (its answer is dropped); only one still running this long "
                                   "after its deadline has its worker killed and replaced")
    api_keys: list[SecretStr] = Field(default_factory=list, description="if set, every route but health, "
                                      "metrics and the service's pages needs one (Authorization: Bearer "
                                      "KEY or X-API-Key: KEY)")
    cors_origins: list[str] = Field(default_factory=list, description="origins browsers may call from")
    max_header_bytes: int = Field(32 * 1024, ge=1024, description="request line and headers of one request, in "
                                  "bytes; past it a 431 and the connection closed")
    max_header_count: int = Field(100, ge=8, description="header fields of one request; past it a 431")
    header_timeout_s: float = Field(10.0, gt=0, description="longest wait for a request's line and headers, from "
                                    "the connection's start or the request's first byte; then a 408 and the "
                                    "connection closed")
    body_timeout_s: float = Field(30.0, gt=0, description="longest time to receive a whole request body; then a "
                                  "408 and the connection closed (a body still arriving 50 ms past the "
                                  "request's deadline gets a 504 instead)")
    max_connections: int = Field(1024, ge=1, description="open client connections per server process; one past "
                                 "it is closed at once (file descriptors stay for the models and workers)")
    shutdown_delay_s: float = Field(0.0, ge=0, description="after SIGTERM: seconds of readiness 503 while still "
                                    "serving, before the listener closes")
    drain_timeout_s: float = Field(30.0, ge=0, description="after the listener closes: longest wait for accepted "
                                   "requests to finish")
    min_tolerance: float = Field(1e-6, gt=0, description="smallest rtol/atol a request may ask for")
    max_tolerance: float = Field(1e-1, gt=0, description="largest rtol/atol a request may ask for")
    max_num_steps: int = Field(1000, ge=1, description="adaptive solver step budget per solve")
    min_step_size: float = Field(0.01, gt=0, description="smallest fixed-solver step (<= 100 steps)")
    torch_threads: int | None = Field(None, ge=1, description="CPU threads of each onnxruntime inference call "
                                      "(default 1; the name is older than serving without torch)")
