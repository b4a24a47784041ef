"""The API's resources: each builds its requests and decodes its answers through the pipeline it is given."""

from .actions import CreditorCancellations, CreditorCreditings, CreditorPayments
from .cases import Cases, Respite

__all__ = ["Cases", "CreditorCancellations", "CreditorCreditings", "CreditorPayments", "Respite"]
