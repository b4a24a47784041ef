"""amili-async: the async Python SDK for Amili's creditor API."""

from typing import TYPE_CHECKING, Any

from ._config import configure_logging_from_env
from ._version import __version__
from .auth import ApiCodeAuth, ApiCodeJwtAuth, StaticTokenAuth
from .bulk import Outcome, StopOn
from .client import AsyncAmiliClient
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

if TYPE_CHECKING:
    from .sync import AmiliClient


def __getattr__(name: str) -> Any:
    # The blocking facade pulls in threads and anyio's portal: load it only for those who use it.
    if name == "AmiliClient":
        from .sync import AmiliClient

        return AmiliClient
    raise AttributeError(f"module 'amili_async' has no attribute {name!r}")


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
