"""One module per API resource; each builds requests and decodes answers through the client's pipeline."""

from .actions import CreditorCancellations, CreditorCreditings, CreditorPayments
from .cases import Cases, Respite

__all__ = ["Cases", "CreditorCancellations", "CreditorCreditings", "CreditorPayments", "Respite"]
