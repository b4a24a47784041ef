"""attrs models: actions (what you send), receipts and cases (what Amili answers)."""

from .actions import Action, CreditorCancellation, CreditorCrediting, CreditorPayment, RespiteGrant
from .cases import Case, RespiteCheck
from .receipts import CancellationReceipt, CreditingReceipt, PaymentReceipt, Receipt, RespiteReceipt

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
