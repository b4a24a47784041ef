"""amili-async: the async Python SDK for Amili's creditor API.

The errors are imported with the package; every other public name is imported the first time it is used
(PEP 562), so `from amili_async import AsyncAmiliClient` loads the client and not the blocking facade, the
bulk runner or the rate limiter until they are needed.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    AmiliError,
    APIStatusError,
    AppliedWithoutReceiptError,
    AuthenticationError,
    BadRequestError,
    ClientStateError,
    ConfigurationError,
    ConflictError,
    NotFoundError,
    NotSentError,
    OutcomeUnknownError,
    PermissionDeniedError,
    PreconditionFailedError,
    RateLimitError,
    ReferenceConflictError,
    RespiteNotAllowedError,
    RespiteValidationError,
    ResponseDecodeError,
    ServerError,
    TimeoutError,
    TransportError,
    UnprocessableEntityError,
    ValidationError,
)
from .models import __all__ as _MODEL_NAMES  # the package alone: each model module loads on first use

if TYPE_CHECKING:
    from ._config import configure_logging_from_env
    from .auth import ApiCodeAuth, ApiCodeJwtAuth, StaticTokenAuth
    from .bulk import Outcome, StopOn
    from .client import AsyncAmiliClient
    from .models import (
        CancellationReceipt,
        Case,
        CreditingReceipt,
        CreditorCancellation,
        CreditorCrediting,
        CreditorPayment,
        PaymentReceipt,
        Receipt,
        RespiteCheck,
        RespiteGrant,
        RespiteReceipt,
    )
    from .ratelimit import AdaptiveRateLimiter, NoRateLimit, RateLimiter
    from .retry import RetryPolicy
    from .sync import AmiliClient

_WHERE = {  # public name -> the module that defines it
    "configure_logging_from_env": "_config",
    "ApiCodeAuth": "auth",
    "ApiCodeJwtAuth": "auth",
    "StaticTokenAuth": "auth",
    "Outcome": "bulk",
    "StopOn": "bulk",
    "AsyncAmiliClient": "client",
    "AmiliClient": "sync",  # the blocking facade: threads and anyio's portal
    "AdaptiveRateLimiter": "ratelimit",
    "NoRateLimit": "ratelimit",
    "RateLimiter": "ratelimit",
    "RetryPolicy": "retry",
    **dict.fromkeys((name for name in _MODEL_NAMES if name != "Action"), "models"),
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'amili_async' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # once loaded, an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "APIStatusError",
    "AmiliClient",
    "AdaptiveRateLimiter",
    "AmiliError",
    "ApiCodeAuth",
    "AppliedWithoutReceiptError",
    "ApiCodeJwtAuth",
    "AsyncAmiliClient",
    "AuthenticationError",
    "BadRequestError",
    "CancellationReceipt",
    "Case",
    "ClientStateError",
    "ConfigurationError",
    "ConflictError",
    "CreditingReceipt",
    "CreditorCancellation",
    "CreditorCrediting",
    "CreditorPayment",
    "NoRateLimit",
    "NotFoundError",
    "NotSentError",
    "Outcome",
    "OutcomeUnknownError",
    "PaymentReceipt",
    "PermissionDeniedError",
    "PreconditionFailedError",
    "RateLimitError",
    "RateLimiter",
    "Receipt",
    "ReferenceConflictError",
    "RespiteCheck",
    "RespiteGrant",
    "RespiteNotAllowedError",
    "RespiteReceipt",
    "RespiteValidationError",
    "ResponseDecodeError",
    "RetryPolicy",
    "ServerError",
    "StaticTokenAuth",
    "StopOn",
    "TimeoutError",
    "TransportError",
    "UnprocessableEntityError",
    "ValidationError",
    "__version__",
    "configure_logging_from_env",
]
