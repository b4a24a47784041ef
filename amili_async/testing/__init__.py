"""An in-memory Amili for tests: what moto is to boto3.

```python
fake = FakeAmili(seed=0)
creditor = fake.add_creditor()
case_id = fake.add_case(creditor=creditor.id, capital=Decimal("1000.00"))
async with httpx.AsyncClient(transport=fake.transport(), base_url=FakeAmili.BASE_URL) as http: ...
```

The same emulator is available as an ASGI app (`fake.asgi_app`) and as a loopback HTTP server
(`amili_async.testing.server`, or ``python -m amili_async.testing serve``). Business rules are described in
`amili_async.testing._rules`, faults in `amili_async.testing.faults`.
"""

from ._limits import RateLimit
from .fake import FakeAmili, FakeCreditor, RecordedRequest
from .faults import Fault, FaultKind

__all__ = ["Fault", "FaultKind", "FakeAmili", "FakeCreditor", "RateLimit", "RecordedRequest"]
