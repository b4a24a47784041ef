"""attrs models: actions (what you send), receipts and cases (what Amili answers).

Each name is imported from its module the first time it is used (`models.actions` alone does not need cases).
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .actions import Action, CreditorCancellation, CreditorCrediting, CreditorPayment, RespiteGrant
    from .cases import Case, RespiteCheck
    from .receipts import CancellationReceipt, CreditingReceipt, PaymentReceipt, Receipt, RespiteReceipt

_WHERE = {
    **dict.fromkeys(
        ("Action", "CreditorCancellation", "CreditorCrediting", "CreditorPayment", "RespiteGrant"), "actions"
    ),
    **dict.fromkeys(("Case", "RespiteCheck"), "cases"),
    **dict.fromkeys(
        ("CancellationReceipt", "CreditingReceipt", "PaymentReceipt", "Receipt", "RespiteReceipt"), "receipts"
    ),
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'amili_async.models' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "Action",
    "CancellationReceipt",
    "Case",
    "CreditingReceipt",
    "CreditorCancellation",
    "CreditorCrediting",
    "CreditorPayment",
    "PaymentReceipt",
    "Receipt",
    "RespiteCheck",
    "RespiteGrant",
    "RespiteReceipt",
]
