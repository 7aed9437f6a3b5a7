"""The server's Prometheus metrics, on prometheus_client: one CollectorRegistry per server (a process may run
several, as the tests do), with the standard process, platform and GC collectors, exposed in the format the
scraper's Accept header asks for (Prometheus text 0.0.4 by default, or OpenMetrics)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder, generate_latest

__all__ = ["Counter", "Gauge", "Histogram", "ServeMetrics"]

# Request latencies from 0.5 ms to 10 s; batch sizes in powers of two.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class _Family:
    """A prometheus_client metric that the server calls with its label values in order (`shed.inc("busy")`),
    and whose current value can be read back (`shed.get("busy")`, for tests and diagnostics)."""

    def __init__(self, metric: Any, sample: str, labels: Sequence[str]) -> None:
        self.metric, self.sample, self.label_names = metric, sample, tuple(labels)

    def _child(self, labels: tuple[str, ...]) -> Any:
        return self.metric.labels(*labels) if labels else self.metric

    def get(self, *labels: str) -> float:
        return self._value(self.sample, dict(zip(self.label_names, labels, strict=True)))

    def _value(self, sample: str, labels: dict[str, str]) -> float:
        for family in self.metric.collect():
            for s in family.samples:
                if s.name == sample and s.labels == labels:
                    return float(s.value)
        return 0.0


class Counter(_Family):
    def __init__(self, registry: CollectorRegistry, name: str, help: str, labels: Sequence[str] = ()) -> None:
        # prometheus_client names a counter without its _total suffix and adds it to the sample.
        base = name.removesuffix("_total")
        super().__init__(prometheus_client.Counter(base, help, labels, registry=registry), base + "_total", labels)

    def inc(self, *labels: str, by: float = 1.0) -> None:
        self._child(labels).inc(by)


class Gauge(_Family):
    def __init__(self, registry: CollectorRegistry, name: str, help: str, labels: Sequence[str] = ()) -> None:
        super().__init__(prometheus_client.Gauge(name, help, labels, registry=registry), name, labels)

    def set(self, value: float, *labels: str) -> None:
        self._child(labels).set(value)

    def inc(self, *labels: str, by: float = 1.0) -> None:
        self._child(labels).inc(by)


class Histogram(_Family):
    def __init__(self, registry: CollectorRegistry, name: str, help: str, buckets: Sequence[float]) -> None:
        metric = prometheus_client.Histogram(name, help, registry=registry, buckets=buckets)
        super().__init__(metric, name + "_count", ())
        self.name = name

    def observe(self, value: float) -> None:
        self.metric.observe(value)

    @property
    def count(self) -> float:
        return self._value(self.name + "_count", {})

    @property
    def sum(self) -> float:
        return self._value(self.name + "_sum", {})


class ServeMetrics:
    """Every figure the server exports, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=r)  # process_cpu_seconds_total, process_start_time_seconds, python_info, ...
        self.requests = Counter(
            r, "lakenet_http_requests_total", "HTTP requests by route and status code.", ("route", "status")
        )
        self.latency = Histogram(
            r,
            "lakenet_predict_latency_seconds",
            "Latency of /v1/predict requests, arrival to response (all statuses).",
            LATENCY_BUCKETS,
        )
        self.rows = Counter(r, "lakenet_predict_rows_total", "Rows scored, by outcome (ok or row error).", ("outcome",))
        self.batch_rows = Histogram(
            r, "lakenet_batch_size_rows", "Rows per micro-batch sent to the model.", BATCH_BUCKETS
        )
        self.batch_seconds = Histogram(
            r, "lakenet_batch_duration_seconds", "Time the model took per micro-batch.", LATENCY_BUCKETS
        )
        self.queue_rows = Gauge(r, "lakenet_queue_rows", "Rows waiting in the micro-batching queue.")
        self.queue_requests = Gauge(r, "lakenet_queue_requests", "Requests waiting in the micro-batching queue.")
        self.inflight = Gauge(r, "lakenet_inflight_requests", "Requests being handled now.")
        self.shed = Counter(
            r,
            "lakenet_rejected_requests_total",
            "Requests refused before scoring: busy (503: too many in flight), queue_full (503: too many rows "
            "waiting), body_bytes (503: too many request bytes held at once), body_timeout (408: the body was not "
            "sent in time), head_timeout (408: the request head was not sent in time), connections (503: too many "
            "open connections), deadline (504), draining (503).",
            ("reason",),
        )
        # Exposed as the gauge lakenet_model_info{name=...,version=...} 1.
        self.model = prometheus_client.Info("lakenet_model", "The model being served (value 1).", registry=r)
        self.swaps = Counter(r, "lakenet_model_swaps_total", "Times --follow-alias switched to a new model version.")
        self.swap_refusals = Counter(
            r,
            "lakenet_model_swap_refusals_total",
            "New versions --follow-alias did not switch to (failed to load, or a different input signature).",
        )
        self.ready = Gauge(r, "lakenet_ready", "1 when a model is loaded and requests are admitted.")

    def set_model(self, name: str, version: str) -> None:
        self.model.info({"name": name, "version": version})

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The metrics in the format an Accept header asks for (prometheus_client's negotiation: OpenMetrics or
        text 1.0.0 when asked for, else text 0.0.4), and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def render(self) -> str:
        """The metrics in the Prometheus text format 0.0.4."""
        return generate_latest(self.registry).decode()
