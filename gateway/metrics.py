"""Prometheus metrics, one registry per app (so tests can build apps side by side).

With ``--workers N`` the CLI sets ``PROMETHEUS_MULTIPROC_DIR`` before the workers start;
``/metrics`` then aggregates every worker's samples, so it reports the whole server.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["Metrics"]

_FAST = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_SLOW = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    """Every ``modgate_*`` metric; attributes are the prometheus_client objects."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        r = self.registry
        self.requests = Counter(
            "modgate_requests_total", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "modgate_request_seconds",
            "Whole request time at the gateway",
            ["route"],
            buckets=_SLOW,
            registry=r,
        )
        self.decisions = Counter(
            "modgate_decisions_total",
            "Non-allow decisions by direction, action and risk code",
            ["direction", "action", "code"],
            registry=r,
        )
        self.classifier_seconds = Histogram(
            "modgate_classifier_seconds",
            "Classifier latency per batch",
            ["classifier"],
            buckets=_FAST,
            registry=r,
        )
        self.classifier_errors = Counter(
            "modgate_classifier_errors_total", "Classifier errors and timeouts", ["classifier"], registry=r
        )
        self.classifier_fallbacks = Counter(
            "modgate_classifier_fallbacks_total",
            "Classifier calls that failed and were decided by on_error, by reason (timeout, error, "
            "circuit_open, overloaded)",
            ["classifier", "reason", "on_error"],
            registry=r,
        )
        self.classifier_circuit_open = Gauge(
            "modgate_classifier_circuit_open",
            "1 while a classifier's circuit breaker is open or half-open",
            ["classifier"],
            registry=r,
            multiprocess_mode="max",
        )
        self.cascade_texts = Counter(
            "modgate_cascade_texts_total",
            "Texts a later-stage (cascade) classifier ran on or skipped",
            ["classifier", "outcome"],
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "modgate_upstream_seconds",
            "Upstream time to response headers",
            ["upstream"],
            buckets=_SLOW,
            registry=r,
        )
        self.upstream_errors = Counter(
            "modgate_upstream_errors_total", "Upstream failures by kind", ["upstream", "kind"], registry=r
        )
        self.added_seconds = Histogram(
            "modgate_gateway_added_seconds",
            "Time the gateway adds to a request (total minus upstream), non-streamed requests",
            ["route"],
            buckets=_FAST,
            registry=r,
        )
        self.holdback_seconds = Histogram(
            "modgate_stream_holdback_seconds",
            "How long streamed text was held back before release, per released delta",
            buckets=_FAST,
            registry=r,
        )
        self.store_errors = Counter(
            "modgate_store_errors_total", "Store operations that failed", ["operation"], registry=r
        )
        self.enforcement_actions = Counter(
            "modgate_enforcement_actions_total",
            "User enforcement: ladder steps taken (warn, restrict, suspend) and requests refused "
            "(rejected_suspended, rejected_restricted)",
            ["action"],
            registry=r,
        )
        self.stream_first_text_seconds = Histogram(
            "modgate_stream_first_text_seconds",
            "Time-to-first-token the gateway adds: first text from the upstream to its release",
            buckets=_FAST,
            registry=r,
        )
        self.stream_cut_seconds = Histogram(
            "modgate_stream_cut_seconds",
            "From the arrival of the text that decided a cut to the upstream's close and to the "
            "client's final chunk",
            ["stage", "mode"],
            buckets=_FAST,
            registry=r,
        )
        self.stream_exposed_chars = Histogram(
            "modgate_stream_exposed_chars",
            "Characters of violating text that reached the client before a cut (0 in hold mode)",
            ["mode"],
            buckets=(0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=r,
        )
        self.stream_cuts = Counter(
            "modgate_stream_cuts_total", "Streams cut by a decision", ["code", "mode"], registry=r
        )

        self.reports = Gauge(
            "modgate_reports",
            "Reports by lifecycle state (read from the store at scrape time)",
            ["state"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.report_outbox = Gauge(
            "modgate_report_outbox",
            "Report events waiting for delivery (pending) and given up on (dead)",
            ["kind"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.complaints_open = Gauge(
            "modgate_complaints_open",
            "Complaints not yet resolved (read from the store at scrape time)",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.report_deliveries = Counter(
            "modgate_report_delivery_attempts_total",
            "Report event deliveries by sink and outcome",
            ["sink", "outcome"],
            registry=r,
        )
        self.report_dead = Counter(
            "modgate_report_dead_letters_total",
            "Report events dead-lettered after every attempt failed",
            registry=r,
        )

    def child(self, metric: Any, *labels: str) -> Any:
        """The labelled child, looked up once: ``labels()`` takes a lock and builds keys, which
        costs more than the observation itself on the hot path."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def request_done(self, route: str, status: int, seconds: float) -> None:
        self.child(self.requests, route, str(status)).inc()
        self.child(self.request_seconds, route).observe(seconds)

    def classifier_done(self, name: str, seconds: float) -> None:
        self.child(self.classifier_seconds, name).observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition; across all workers in multi-process mode."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
