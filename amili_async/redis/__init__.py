"""Many processes, one Amili: a shared token and a shared rate budget on Redis (the ``[redis]`` extra).

```python
from amili_async.redis import RedisRateLimiter, RedisTokenStore

store = RedisTokenStore("redis://localhost:6379/0", base_url=BASE_URL, auth=auth)
limiter = RedisRateLimiter("redis://localhost:6379/0", base_url=BASE_URL, auth=auth)
client = AsyncAmiliClient(auth=auth, base_url=BASE_URL, token_store=store, rate_limiter=limiter)
```

`redis` (redis-py 5 or later) is imported only when one of these is constructed: `import amili_async` never
imports it. On asyncio they speak through `redis.asyncio`, on trio through the blocking client in a worker
thread. When Redis is unreachable they log one warning and fall back to this process alone (its own token,
its own rate controller): a payment never waits on Redis.
"""

from ._rates import RedisRateLimiter
from ._tokens import RedisTokenStore

__all__ = ["RedisRateLimiter", "RedisTokenStore"]
