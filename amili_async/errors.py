"""Every error the SDK raises, in one tree.

```
AmiliError                      base of everything below
├── ConfigurationError          bad client set-up (missing credentials, bad base URL); raised at construction
├── ClientStateError            client closed, or used from another event loop
├── ValidationError             bad input caught before sending (status_code None), and HTTP 422
│   └── UnprocessableEntityError    HTTP 422 from Amili (also an APIStatusError)
│       └── RespiteValidationError      a respite grant refused with 422 (also a RespiteNotAllowedError)
├── APIStatusError              Amili answered with an error status
│   ├── BadRequestError             400
│   ├── AuthenticationError         401 (after one token refresh and one replay), and token endpoint refusals
│   ├── PermissionDeniedError       403
│   ├── NotFoundError               404
│   ├── ConflictError               409
│   ├── PreconditionFailedError     412 / 428
│   ├── RateLimitError              429 (carries retry_after)
│   ├── RespiteNotAllowedError      respite refused: 206 on grant, or 400/409 with issues (a 422: see above)
│   └── ServerError                 5xx (an HTML page from a proxy included)
├── ResponseDecodeError         a 2xx answer whose body could not be read
│   └── AppliedWithoutReceiptError  a write Amili accepted (2xx) whose record could not be read back: APPLIED
├── TransportError              the request failed at the network level; for a write: provably never reached Amili
│   └── TimeoutError                connect / pool timeout (for reads: any timeout, after retries); a deadline
│                                   that ran out before a write was sent, or after it was proven not applied
├── NotSentError                a run stopped (`execute_many(stop_on=...)`) before this action went out: not applied
└── OutcomeUnknownError         a write whose result was lost (read timeout, disconnect, 5xx) and could not be
    │                           proven either way: it may or may not have been applied; carries the action
    │                           and its reference. Never sent again by the SDK.
    └── ReferenceConflictError      the reference is held by a record that is not this action's, or by several
                                    records: `records` holds what Amili has, `expected` what this action sent
```

For a write, the class says what is known (the rule of evidence, `amili_async/_evidence.py`):
applied (a receipt, or `AppliedWithoutReceiptError`), not applied (`TransportError`, `TimeoutError` and every
`APIStatusError` — none of these is ever raised for a write Amili may hold), or unknown
(`OutcomeUnknownError` and its subclass `ReferenceConflictError`).

```

Every error carries `message`, `status_code` (None when Amili sent no answer), `issues` (Eve's `_issues`
normalised to field -> tuple of messages), `method` and `path` (never the query string, never headers),
`query` (the shape of the query string: parameter names and the keys of `where`, never their values),
`body` (a short excerpt for non-JSON answers), `attempts` (how many times the request was sent),
`request_id` (the `X-Request-ID` the SDK sent with every attempt of the call; None when nothing was sent)
and `server_request_id` (an id Amili, or a proxy in front of it, answered with, when it sent one).

No error ever holds a token, an API code or a key: requests and transport exceptions are never attached to
(or chained with) our exceptions, and every text that came from the other side of the wire passes through
the client's `Redactor` (`amili_async._redact`, the one redaction point) before an error or a log line is built.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "APIStatusError",
    "AmiliError",
    "AppliedWithoutReceiptError",
    "AuthenticationError",
    "BadRequestError",
    "ClientStateError",
    "ConfigurationError",
    "ConflictError",
    "NotFoundError",
    "NotSentError",
    "OutcomeUnknownError",
    "PermissionDeniedError",
    "PreconditionFailedError",
    "RateLimitError",
    "ReferenceConflictError",
    "RespiteNotAllowedError",
    "RespiteValidationError",
    "ResponseDecodeError",
    "ServerError",
    "TimeoutError",
    "TransportError",
    "UnprocessableEntityError",
    "ValidationError",
    "error_for_status",
    "normalise_issues",
]

Issues = Mapping[str, tuple[str, ...]]
_EXCERPT = 200


class AmiliError(Exception):
    """Base class of every error raised by amili-async."""

    status_code: int | None = None
    #: The action (and its business reference) that failed, set when the error comes from `execute`.
    action: Any = None
    reference: str | None = None
    #: The `X-Request-ID` sent with every attempt of the call (None when the error came before any request),
    #: and the id Amili or a proxy answered with, if any: quote them when asking Amili about a call.
    request_id: str | None = None
    server_request_id: str | None = None

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        issues: Issues | None = None,
        method: str | None = None,
        path: str | None = None,
        body: Any = None,
        attempts: int = 0,
        query: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        self.issues: Issues = issues or {}
        self.method = method
        self.path = path
        self.query = query or None
        self.body = body
        self.attempts = attempts

    def __str__(self) -> str:
        where = f" ({self.method} {self.path}{self.query or ''})" if self.method and self.path else ""
        status = f"{self.status_code} " if self.status_code is not None else ""
        # One message per problem: an issue the message already says (a check that failed before sending
        # puts the same words in both) is not said twice.
        parts = [f"{k}: {', '.join(v)}" for k, v in self.issues.items()]
        issues = "".join(f"; {part}" for part in parts if part not in self.message)
        tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        return f"{status}{self.message}{issues}{where}{tries}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    def __reduce__(self) -> Any:
        # Keyword-only constructors do not pickle by default; errors cross process pools in bulk runs.
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls: type[AmiliError], state: dict[str, Any]) -> AmiliError:
    err = cls.__new__(cls)
    Exception.__init__(err, state.get("message", ""))
    err.__dict__.update(state)
    return err


class ConfigurationError(AmiliError, ValueError):
    """The client cannot be built as asked (missing credentials, unsafe base URL, ...)."""


class ClientStateError(AmiliError, RuntimeError):
    """The client was used after `aclose()`, or from an event loop other than the one it started on."""


class ValidationError(AmiliError, ValueError):
    """Input Amili would refuse: caught before sending (status_code None), or refused by Amili with 422."""


class APIStatusError(AmiliError):
    """Amili answered with an error status."""

    status_code: int


class BadRequestError(APIStatusError):
    status_code = 400


class AuthenticationError(APIStatusError):
    status_code = 401


class PermissionDeniedError(APIStatusError):
    status_code = 403


class NotFoundError(APIStatusError):
    status_code = 404


class ConflictError(APIStatusError):
    status_code = 409


class PreconditionFailedError(APIStatusError):
    status_code = 412


class UnprocessableEntityError(ValidationError, APIStatusError):
    status_code = 422


class RateLimitError(APIStatusError):
    """429. `retry_after` is the wait Amili asked for, in seconds, when it said one."""

    status_code = 429

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class RespiteNotAllowedError(APIStatusError):
    """A respite grant was refused; `issues["respite"]` (or other keys) say why.

    Catch this class for every refusal of a grant. A refusal Amili answers with 422 (`days: max value is 30`,
    `respite: max_per_case_reached`) is a `RespiteValidationError`, which is *also* a `ValidationError`; a 206
    (Amili's documented "not allowed") or a 400/409 with issues is this class only.
    """


class RespiteValidationError(RespiteNotAllowedError, UnprocessableEntityError):
    """A respite grant refused with 422: both a `RespiteNotAllowedError` and a `ValidationError`."""

    status_code = 422


class ServerError(APIStatusError):
    status_code = 500


class ResponseDecodeError(AmiliError):
    """Amili answered 2xx but the body was not the JSON we expected."""


class AppliedWithoutReceiptError(ResponseDecodeError):
    """The write WAS applied (Amili answered 2xx), but its record could not be read, nor fetched afterwards.

    Never send the action again. `record_id` is the record's id when the answer showed it (its `_id` or
    `Location`), else None: find it by the action's reference later (`reference`).
    """

    def __init__(self, message: str, *, record_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.record_id = record_id


class TransportError(AmiliError):
    """The request failed below HTTP. For a write this class means it provably never reached Amili."""


class TimeoutError(TransportError, builtins.TimeoutError):
    """A connect or pool timeout (for a write: never sent); for a read: any timeout once retries ran out."""


class NotSentError(AmiliError):
    """Not applied: the run stopped before this action was sent (again), so sending it later is safe.

    `execute_many(stop_on=...)` gives this outcome to every action it did not send once it stopped (bad
    credentials, Amili unreachable): the ones it never started and the ones still waiting for a token or their
    turn. `reason` is the error that stopped the run.
    """

    def __init__(self, message: str, *, reason: AmiliError | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.reason = reason


class OutcomeUnknownError(AmiliError):
    """A write whose result is unknown: it may or may not have been applied. The SDK did not send it again.

    Raised only when the SDK could not prove either way: no reference to look it up by, the lookup itself
    failed, the server does not honour the lookup's filter, or the call's deadline left no room for the
    settle window. `action` is the action that was sent and `reference` its business reference (or None):
    reconcile with them later, e.g. `client.creditor_payments.list(where={"creditor_payment_reference": ref})`.
    """

    def __init__(self, message: str, *, action: Any = None, reference: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.action = action
        self.reference = reference


class ReferenceConflictError(OutcomeUnknownError):
    """The action's reference is held by a record that is not this action's, or by several records.

    Never a success and never resent: the SDK cannot tell which record (if any) is this action's. `records`
    are the records Amili holds under the reference (as Amili answered them), `expected` the identifying
    fields this action sent. Reused references cause it: give every payment its own reference.
    """

    def __init__(
        self,
        message: str,
        *,
        records: tuple[Mapping[str, Any], ...] = (),
        expected: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.records = records
        self.expected = dict(expected or {})


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    412: PreconditionFailedError,
    428: PreconditionFailedError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def normalise_issues(raw: Any) -> dict[str, tuple[str, ...]]:
    """Eve's `_issues` (a dict of str-or-list, a list, or a string) -> field -> tuple of messages."""
    if raw is None or raw == {} or raw == []:
        return {}
    if isinstance(raw, Mapping):
        out: dict[str, tuple[str, ...]] = {}
        for field, value in raw.items():
            values = value if isinstance(value, (list, tuple)) else (value,)
            out[str(field)] = _unique(_issue_text(v) for v in values)
        return out
    if isinstance(raw, (list, tuple)):
        return {"_": _unique(_issue_text(v) for v in raw)}
    return {"_": (str(raw),)}


def _unique(messages: Iterable[str]) -> tuple[str, ...]:
    """Each message once, in the order given (Eve repeats a message when a rule fails twice)."""
    return tuple(dict.fromkeys(messages))


def _issue_text(value: Any) -> str:
    if isinstance(value, Mapping):
        for key in ("message", "msg", "description", "code", "reason"):
            if key in value:
                return str(value[key])
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def excerpt(raw: bytes) -> str:
    """A short, single-line piece of a non-JSON body (an HTML error page, say) for messages."""
    text = raw[: _EXCERPT * 4].decode("utf-8", "replace")
    text = " ".join(text.split())
    return text[:_EXCERPT] + ("…" if len(text) > _EXCERPT else "")


def error_for_status(
    status: int,
    payload: Any,
    raw: bytes,
    *,
    method: str,
    path: str,
    retry_after: float | None = None,
    attempts: int = 1,
    query: str | None = None,
) -> APIStatusError:
    """Build the exception for an error answer, from Eve's envelope when there is one."""
    issues: dict[str, tuple[str, ...]] = {}
    message = ""
    body: Any
    if isinstance(payload, Mapping):
        body = payload
        issues = normalise_issues(payload.get("_issues", payload.get("issues")))
        err = payload.get("_error")
        if isinstance(err, Mapping):
            message = str(err.get("message") or "")
        elif err:
            message = str(err)
    else:
        body = excerpt(raw) if raw else None
    if not message:
        message = _default_message(status, body)
    cls: type[APIStatusError] = _BY_STATUS.get(status) or (ServerError if status >= 500 else APIStatusError)
    kwargs: dict[str, Any] = dict(
        status_code=status, issues=issues, method=method, path=path, body=body, attempts=attempts, query=query
    )
    if cls is RateLimitError:
        return RateLimitError(message, retry_after=retry_after, **kwargs)
    return cls(message, **kwargs)


def _default_message(status: int, body: Any) -> str:
    if isinstance(body, str) and body:
        return f"HTTP {status}: {body}"
    return f"HTTP {status}"
