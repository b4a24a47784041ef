"""OpenTelemetry spans and metrics for `_telemetry`. Imported only once the application configured a provider.

Spans: one per SDK operation (`amili.creditor_payments.create`, kind INTERNAL, child of the caller's span),
and under it one per HTTP exchange following the HTTP client semantic conventions (`POST /creditor--payments`,
kind CLIENT). Metrics: `http.client.request.duration` (seconds) and four counters, `amili.client.retries`,
`amili.client.throttle_waits`, `amili.client.token_refreshes` and `amili.client.unknown_outcomes`.

Attributes hold routes (`url.template`), methods, statuses, class names, counts and our own request ids:
never an id of Amili's, a query value, an amount or a message (messages may quote any of these).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from ._version import __version__

__all__ = ["Otel"]


class Operation(Protocol):
    """What this module uses of `_telemetry.Operation` (it sets `span` and `otel_token`), without importing it."""

    name: str
    method: str
    kind: str | None
    request_id: str
    server_request_id: str | None
    attempt: int
    sends: int
    outcome: str | None
    span: Any
    otel_token: Any

    @property
    def template(self) -> str: ...


SCOPE = "amili_async"
# The boundaries the HTTP semantic conventions recommend for `http.client.request.duration`.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


def _placeholder_tracer_provider(provider: Any) -> bool:
    return provider is None or isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def _placeholder_meter_provider(provider: Any) -> bool:
    if provider is None or isinstance(provider, metrics.NoOpMeterProvider):
        return True
    # The API's stand-in until an SDK is set; not public, so an unknown class counts as a real provider.
    return type(provider).__name__ == "_ProxyMeterProvider"


class Otel:
    """The tracer and instruments of one pair of global providers (either may be absent)."""

    def __init__(self, tracer_provider: Any, meter_provider: Any, address: str | None, port: int | None) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.server: dict[str, Any] = {}
        if address:
            self.server["server.address"] = address
        if port:
            self.server["server.port"] = port
        self.tracer: trace.Tracer | None = None
        if not _placeholder_tracer_provider(tracer_provider):
            self.tracer = tracer_provider.get_tracer(SCOPE, __version__)
        self.meter: metrics.Meter | None = None
        if not _placeholder_meter_provider(meter_provider):
            meter = self.meter = meter_provider.get_meter(SCOPE, __version__)
            self.duration = meter.create_histogram(
                "http.client.request.duration",
                unit="s",
                description="Duration of HTTP client requests.",
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            )
            self.retries = meter.create_counter(
                "amili.client.retries", unit="{retry}", description="Requests sent again after a failed attempt."
            )
            self.throttle_waits = meter.create_counter(
                "amili.client.throttle_waits", unit="{wait}", description="Waits because Amili asked to slow down."
            )
            self.token_refreshes = meter.create_counter(
                "amili.client.token_refreshes", unit="{request}", description="Requests to the token endpoint."
            )
            self.unknown_outcomes = meter.create_counter(
                "amili.client.unknown_outcomes",
                unit="{operation}",
                description="Writes whose outcome could not be established (OutcomeUnknownError).",
            )
        self.active = self.tracer is not None or self.meter is not None

    # -- operations ---------------------------------------------------------------------------------------

    def begin(self, op: Operation) -> None:
        if self.tracer is None:
            return
        attributes: dict[str, Any] = {"amili.request_id": op.request_id}
        if op.kind is not None:
            attributes["amili.action.kind"] = op.kind
        span = self.tracer.start_span(op.name, kind=SpanKind.INTERNAL, attributes=attributes)
        op.span = span
        # Current while the operation runs: lookups, token requests and any lower-level instrumentation nest here.
        op.otel_token = otel_context.attach(trace.set_span_in_context(span))

    def end(self, op: Operation, error_type: str | None) -> None:
        if self.meter is not None and op.outcome == "unknown":  # OutcomeUnknownError
            self.unknown_outcomes.add(1, self._operation_attributes(op))
        span = op.span
        if span is None:
            return
        try:
            span.set_attribute("amili.attempts", op.attempt)
            span.set_attribute("amili.outcome", op.outcome or "")
            if op.server_request_id:
                span.set_attribute("amili.server_request_id", op.server_request_id)
            if error_type is not None:
                span.set_attribute("error.type", error_type)
                span.set_status(Status(StatusCode.ERROR))  # no description: error messages may quote ids
            span.end()
        finally:
            if op.otel_token is not None:
                otel_context.detach(op.otel_token)

    # -- attempts, waits, tokens ------------------------------------------------------------------------

    def attempt(self, op: Operation, started: float, status: int | None, error_type: str | None) -> None:
        attributes = self._http_attributes(op.method, op.template, status, error_type)
        duration = time.monotonic() - started
        if self.meter is not None:
            self.duration.record(duration, attributes)
        if self.tracer is not None and op.span is not None:
            attributes["amili.attempt"] = op.attempt
            attributes["amili.request_id"] = op.request_id
            if op.sends > 1:
                attributes["http.request.resend_count"] = op.sends - 1
            self._http_span(op.span, f"{op.method} {op.template}", duration, attributes)

    def waited(self, op: Operation, reason: str, seconds: float) -> None:
        throttled = reason == "throttled"
        if op.span is not None:
            event = "amili.throttle_wait" if throttled else "amili.retry"
            attributes = {"amili.retry.reason": reason, "amili.wait_s": round(seconds, 3), "amili.attempt": op.attempt}
            op.span.add_event(event, attributes)
        if self.meter is not None:
            self.retries.add(1, {"amili.operation": op.name, "amili.retry.reason": reason})
            if throttled:
                self.throttle_waits.add(1, {"amili.operation": op.name})

    def token_request(
        self,
        op: Operation | None,
        method: str,
        template: str,
        started: float,
        status: int | None,
        error_type: str | None,
    ) -> None:
        attributes = self._http_attributes(method, template, status, error_type)
        duration = time.monotonic() - started
        if self.meter is not None:
            self.duration.record(duration, attributes)
            outcome = {"error.type": attributes["error.type"]} if "error.type" in attributes else {}
            self.token_refreshes.add(1, outcome)
        if self.tracer is not None:
            parent = op.span if op is not None else None
            self._http_span(parent, f"{method} {template}", duration, attributes)

    # -- helpers ----------------------------------------------------------------------------------------

    def _http_attributes(self, method: str, template: str, status: int | None, error: str | None) -> dict[str, Any]:
        attributes: dict[str, Any] = {"http.request.method": method, "url.template": template, **self.server}
        if status is not None:
            attributes["http.response.status_code"] = status
        if error is not None:
            attributes["error.type"] = error
        elif status is not None and status >= 400:
            attributes["error.type"] = str(status)
        return attributes

    def _http_span(self, parent: Any, name: str, duration: float, attributes: dict[str, Any]) -> None:
        """A finished exchange as a CLIENT span, made after the fact: it costs nothing while the request runs."""
        assert self.tracer is not None
        end = time.time_ns()
        context = trace.set_span_in_context(parent) if parent is not None else None
        span = self.tracer.start_span(
            name, context=context, kind=SpanKind.CLIENT, attributes=attributes, start_time=end - int(duration * 1e9)
        )
        if "error.type" in attributes:
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=end)

    @staticmethod
    def _operation_attributes(op: Operation) -> dict[str, Any]:
        attributes = {"amili.operation": op.name}
        if op.kind is not None:
            attributes["amili.action.kind"] = op.kind
        return attributes
