"""Prometheus text exposition (format 0.0.4) for the server: counters, gauges and histograms, hand-written so
serving needs no metrics library. Updated from the event loop thread only, so no locks are needed."""

from __future__ import annotations

import bisect
import resource
import time
from collections.abc import Iterable, Sequence

__all__ = ["Counter", "Gauge", "Histogram", "ServeMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Request latencies from 0.5 ms to 10 s; batch sizes in powers of two.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

LabelValues = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _num(v: float) -> str:
    if v == float("inf"):
        return "+Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


class _Metric:
    kind = ""

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        self.name, self.help, self.label_names = name, help, tuple(labels)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def render(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help, labels)
        self.values: dict[LabelValues, float] = {} if labels else {(): 0.0}

    def inc(self, *labels: str, by: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + by

    def get(self, *labels: str) -> float:
        return self.values.get(labels, 0.0)

    def render(self) -> list[str]:
        return [*self.header()] + [
            f"{self.name}{_labels(self.label_names, k)} {_num(v)}" for k, v in sorted(self.values.items())
        ]


class Gauge(Counter):
    kind = "gauge"

    def set(self, value: float, *labels: str) -> None:
        self.values[labels] = float(value)


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help: str, buckets: Iterable[float]) -> None:
        super().__init__(name, help)
        self.bounds = sorted(float(b) for b in buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def render(self) -> list[str]:
        lines = self.header()
        cumulative = 0
        for bound, n in zip([*self.bounds, float("inf")], self.counts, strict=True):
            cumulative += n
            lines.append(f'{self.name}_bucket{{le="{_num(bound)}"}} {cumulative}')
        lines += [f"{self.name}_sum {_num(self.sum)}", f"{self.name}_count {self.count}"]
        return lines


class ServeMetrics:
    """Every figure the server exports."""

    def __init__(self) -> None:
        self.started = time.time()
        self.requests = Counter(
            "lakenet_http_requests_total", "HTTP requests by route and status code.", ("route", "status")
        )
        self.latency = Histogram(
            "lakenet_predict_latency_seconds",
            "Latency of /v1/predict requests, arrival to response (all statuses).",
            LATENCY_BUCKETS,
        )
        self.rows = Counter("lakenet_predict_rows_total", "Rows scored, by outcome (ok or row error).", ("outcome",))
        self.batch_rows = Histogram("lakenet_batch_size_rows", "Rows per micro-batch sent to the model.", BATCH_BUCKETS)
        self.batch_seconds = Histogram(
            "lakenet_batch_duration_seconds", "Time the model took per micro-batch.", LATENCY_BUCKETS
        )
        self.queue_rows = Gauge("lakenet_queue_rows", "Rows waiting in the micro-batching queue.")
        self.queue_requests = Gauge("lakenet_queue_requests", "Requests waiting in the micro-batching queue.")
        self.inflight = Gauge("lakenet_inflight_requests", "Requests being handled now.")
        self.shed = Counter(
            "lakenet_rejected_requests_total",
            "Requests refused before scoring: busy (503: too many in flight), queue_full (503: too many rows "
            "waiting), body_bytes (503: too many request bytes held at once), body_timeout (408: the body was not "
            "sent in time), head_timeout (408: the request head was not sent in time), connections (503: too many "
            "open connections), deadline (504), draining (503).",
            ("reason",),
        )
        self.model = Gauge("lakenet_model_info", "The model being served (value 1).", ("name", "version"))
        self.swaps = Counter("lakenet_model_swaps_total", "Times --follow-alias switched to a new model version.")
        self.swap_refusals = Counter(
            "lakenet_model_swap_refusals_total",
            "New versions --follow-alias did not switch to (failed to load, or a different input signature).",
        )
        self.ready = Gauge("lakenet_ready", "1 when a model is loaded and requests are admitted.")
        self.cpu = Gauge("process_cpu_seconds_total", "User + system CPU time of the server process.")
        self.start_time = Gauge("process_start_time_seconds", "Start time of the server, seconds since the epoch.")
        self.start_time.set(self.started)

    def set_model(self, name: str, version: str) -> None:
        self.model.values.clear()
        self.model.set(1, name, version)

    def render(self) -> str:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.cpu.set(usage.ru_utime + usage.ru_stime)
        metrics: list[_Metric] = [
            self.requests,
            self.latency,
            self.rows,
            self.batch_rows,
            self.batch_seconds,
            self.queue_rows,
            self.queue_requests,
            self.inflight,
            self.shed,
            self.model,
            self.swaps,
            self.swap_refusals,
            self.ready,
            self.cpu,
            self.start_time,
        ]
        return "\n".join(line for m in metrics for line in m.render()) + "\n"
