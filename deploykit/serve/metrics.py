"""Prometheus metrics of one server, in a registry of its own (two apps in one process never share counters).

    metrics = Metrics()
    metrics.observe("/predict", 200, 0.004)       # one request: count, latency
    metrics.batch_rows.observe(12)                # one model call
    generate_latest(metrics.registry)             # the text GET /metrics answers
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# seconds: batch-1 inference of the final INT8 model is ~1-2 ms, a full batch of 256 long rows ~1 s
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    """Request count, errors and latency per endpoint; batch sizes, inference time and queue depth."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("deploykit_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "code"], registry=r)
        self.errors = Counter("deploykit_request_errors", "requests answered with an error, by endpoint and kind "
                              "(client: 4xx, server: 5xx)", ["endpoint", "kind"], registry=r)
        self.latency = Histogram("deploykit_request_latency_seconds", "time from request to response, by endpoint",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_rows = Histogram("deploykit_batch_rows", "rows per model call", buckets=ROW_BUCKETS, registry=r)
        self.batch_requests = Histogram("deploykit_batch_requests", "requests answered by one model call",
                                        buckets=ROW_BUCKETS, registry=r)
        self.inference = Histogram("deploykit_inference_seconds", "time of one model call", buckets=LATENCY_BUCKETS,
                                   registry=r)
        self.queue_depth = Gauge("deploykit_queue_depth", "requests waiting for the model", registry=r)

    def observe(self, endpoint: str, code: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(code)).inc()
        self.latency.labels(endpoint).observe(seconds)
        if code >= 400:
            self.errors.labels(endpoint, "client" if code < 500 else "server").inc()
