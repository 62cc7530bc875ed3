"""The service's Prometheus metrics, in one place (base units, histograms, bounded label sets).

Each app owns its CollectorRegistry, so several apps (tests) never collide. Under several server
processes (ECG_WORKERS, service.server) prometheus-client's multiprocess mode keeps every value in
a shared folder, and the exposition gathers them: any process answers for the whole service.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0)
# dopri5 spends 2 + 6k evaluations for k steps: buckets on that grid, then coarser.
NFE_BUCKETS = (8, 14, 20, 26, 32, 38, 44, 50, 62, 74, 98, 128, 194, 302, 506, 1004, 2006, 6002)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class ServiceMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.inference_latency = Histogram(
            "ecg_inference_latency_seconds", "Time spent in the predictor per batch.",
            ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram(
            "ecg_queue_wait_seconds", "Time a request waited in its model's batching queue.",
            ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.ode_nfe = Histogram(
            "ecg_ode_nfe", "ODE function evaluations per beat.", ["model", "method"],
            buckets=NFE_BUCKETS, registry=r)
        self.http_duration = Histogram(
            "ecg_http_request_duration_seconds", "HTTP request duration by route template and status.",
            ["route", "method", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self.beats = Counter(
            "ecg_beats_classified", "Beats classified, by model and predicted label.",
            ["model", "label"], registry=r)
        self.review = Counter(
            "ecg_beats_review", "Beats flagged for review (confidence below the model's review threshold).",
            ["model"], registry=r)
        self.batch_size = Histogram(
            "ecg_batch_size_beats", "Beats per batch run by the predictor (after dynamic batching).",
            ["model"], buckets=BATCH_BUCKETS, registry=r)
        self.in_flight = Gauge(
            "ecg_http_requests_in_flight", "HTTP requests being served.", registry=r,
            multiprocess_mode="livesum")
        self.model_info = Gauge(
            "ecg_model_info", "Loaded models (value 1), with version and backend.",
            ["model", "version", "backend"], registry=r, multiprocess_mode="max")
        self.children: dict = {}

    def child(self, metric, *labels: str):
        """metric.labels(*labels), kept for the next request: labels() takes a lock and checks its
        arguments on every call, a few microseconds each, several times per request."""
        key = (metric, labels)
        found = self.children.get(key)
        if found is None:
            found = self.children[key] = metric.labels(*labels)
        return found

    @staticmethod
    def shared() -> bool:
        """Several server processes share the values (multiprocess mode)."""
        return "PROMETHEUS_MULTIPROC_DIR" in os.environ

    def exposition(self) -> bytes:
        """The text format of every metric: this process's, or all processes' in multiprocess mode."""
        if not self.shared():
            return generate_latest(self.registry)
        gathered = CollectorRegistry()
        multiprocess.MultiProcessCollector(gathered)
        return generate_latest(gathered)

    def process_exited(self) -> None:
        """In multiprocess mode: this process's live gauges stop counting."""
        if self.shared():
            multiprocess.mark_process_dead(os.getpid())
