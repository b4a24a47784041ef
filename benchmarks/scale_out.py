"""Many processes, one Amili: K workers share one login and one rate budget through Redis, or do not.

    python benchmarks/scale_out.py                      # 4 workers, 4,000 payments, 200 req/s; redis and local
    python benchmarks/scale_out.py --modes redis --workers 8 --payments 8000 --backend trio

The in-memory Amili is served on loopback (``python -m amili_async.testing serve``) with one limit of
``--limit`` requests a second per creditor (its account: one API user), across all connections, in Eve's
style (fixed one-second windows, ``X-RateLimit-*`` headers, a bare 429), and single-active-token mode on (a new
login revokes the older tokens; ``--many-tokens`` turns it off). K worker processes start together and each
runs ``execute_many`` over its shard of the referenced payments. Run once with ``RedisTokenStore`` +
``RedisRateLimiter`` on a throw-away redis-server ("redis"), once with each process on its own ("local").

One JSON object per run on stdout: mode, workers, payments, failed, duplicates, token_requests (as the server
counted them), wall_s (first start to last finish), ideal_s (payments / limit), rate_fraction (achieved
payments per second / limit), http_429 (answers the server sent with 429), and lost. Exit status 1 when a
payment was lost (reported done but not stored, stored although reported refused, or no outcome at all) or
stored twice, in any run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


# -- the worker (a child process) ---------------------------------------------------------------------


async def _work(cfg: dict[str, Any]) -> dict[str, Any]:
    from datetime import datetime, timezone
    from decimal import Decimal

    import anyio

    from amili_async import ApiCodeJwtAuth, AsyncAmiliClient, CreditorPayment, OutcomeUnknownError

    auth = ApiCodeJwtAuth(api_code=cfg["api_code"], private_key=cfg["private_key_pem"], algorithm=cfg["algorithm"])
    shared: dict[str, Any] = {}
    if cfg["redis_url"]:
        from amili_async.redis import RedisRateLimiter, RedisTokenStore

        shared["token_store"] = RedisTokenStore(cfg["redis_url"], base_url=cfg["base_url"], auth=auth)
        shared["rate_limiter"] = RedisRateLimiter(
            cfg["redis_url"], base_url=cfg["base_url"], auth=auth, headroom=cfg["headroom"]
        )
    cases = cfg["cases"]
    when = datetime(2025, 10, 7, 8, 15, tzinfo=timezone.utc)
    mine = range(cfg["shard"], cfg["payments"], cfg["workers"])
    actions = [
        CreditorPayment(
            creditor=cfg["creditor"],
            case=cases[i % len(cases)],
            amount=Decimal("1.00"),
            currency="SEK",
            bank_transaction_date=when,
            creditor_payment_reference=f"SCALE-{cfg['run']}-{i:06d}",
        )
        for i in mine
    ]
    ok: list[str] = []
    unknown: list[str] = []
    errors: Counter[str] = Counter()
    async with AsyncAmiliClient(auth=auth, base_url=cfg["base_url"], **shared) as client:
        await anyio.sleep(max(0.0, cfg["start_at"] - time.time()))  # all workers start together
        started = time.time()
        async for outcome in client.execute_many(actions, concurrency=cfg["concurrency"]):
            reference = outcome.action.creditor_payment_reference
            assert reference is not None
            if outcome.ok:
                ok.append(reference)
            else:
                errors[type(outcome.error).__name__] += 1
                if isinstance(outcome.error, OutcomeUnknownError):
                    unknown.append(reference)
        finished = time.time()
        token_requests = client.token_requests
    for part in shared.values():
        await part.aclose()
    return {
        "shard": cfg["shard"],
        "actions": len(actions),
        "ok": len(ok),
        "unknown": len(unknown),
        "errors": dict(errors),
        "started": started,
        "finished": finished,
        "client_token_requests": token_requests,
    }


def worker_main(cfg: dict[str, Any]) -> None:
    import anyio

    result = anyio.run(_work, cfg, backend=cfg["backend"])
    sys.stdout.write(json.dumps(result) + "\n")


# -- the runner ---------------------------------------------------------------------------------------


def _start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    argv = [sys.executable, "-m", "amili_async.testing", "serve", "--cases", "100", "--stats"]
    argv += ["--rate-limit", str(args.limit)] + ([] if args.many_tokens else ["--single-active-token"])
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=child_env(), cwd=REPO_ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=10)
        raise RuntimeError(f"the in-memory Amili did not start (exit {proc.returncode})")
    return proc, json.loads(line)


def _stop_server(proc: subprocess.Popen[str]) -> dict[str, Any]:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    lines = [line for line in out.splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else {}


def run_mode(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    from amili_async.testing.redis_server import RedisServer

    redis_server = RedisServer().start() if mode == "redis" else None
    workers: list[subprocess.Popen[str]] = []
    server: subprocess.Popen[str] | None = None
    stats: dict[str, Any] = {}
    try:
        server, info = _start_server(args)
        start_at = time.time() + args.startup
        for shard in range(args.workers):
            cfg = {
                **{k: info[k] for k in ("base_url", "creditor", "api_code", "private_key_pem", "algorithm", "cases")},
                "redis_url": redis_server.url if redis_server else None,
                "shard": shard,
                "workers": args.workers,
                "payments": args.payments,
                "concurrency": args.concurrency,
                "backend": args.backend,
                "start_at": start_at,
                "headroom": args.headroom,
                "run": f"{mode}-{os.getpid()}",
            }
            proc = subprocess.Popen(
                [sys.executable, __file__, "--worker", json.dumps(cfg)],
                stdout=subprocess.PIPE,
                text=True,
                env=child_env(),
                cwd=REPO_ROOT,
            )
            workers.append(proc)
        results = []
        for proc in workers:
            out, _ = proc.communicate(timeout=args.timeout)
            lines = [line for line in out.splitlines() if line.startswith("{")]
            results.append(json.loads(lines[-1]) if proc.returncode == 0 and lines else None)
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
        if server is not None:
            stats = _stop_server(server)
        if redis_server is not None:
            redis_server.close()
    return _summary(args, mode, results, stats)


def _summary(args: argparse.Namespace, mode: str, results: list[Any], stats: dict[str, Any]) -> dict[str, Any]:
    done = [r for r in results if r is not None]
    outcomes = sum(r["actions"] for r in done)
    ok = sum(r["ok"] for r in done)
    unknown = sum(r["unknown"] for r in done)
    stored = stats.get("references", 0)
    wall = max(r["finished"] for r in done) - min(r["started"] for r in done) if done else 0.0
    errors: Counter[str] = Counter()
    for r in done:
        errors.update(r["errors"])
    ideal = args.payments / args.limit
    lost = (args.payments - outcomes) + max(0, ok - stored) + max(0, stored - ok - unknown)
    return {
        "mode": mode,
        "workers": args.workers,
        "payments": args.payments,
        "failed": outcomes - ok,
        "duplicates": stats.get("duplicate_references", 0),
        "token_requests": stats.get("token_requests"),
        "wall_s": round(wall, 2),
        "ideal_s": round(ideal, 2),
        "rate_fraction": round(ok / wall / args.limit, 3) if wall else 0.0,
        "http_429": stats.get("statuses", {}).get("429", 0),
        "lost": lost,
        "requests": sum(stats.get("statuses", {}).values()),
        "errors": dict(errors),
        "backend": args.backend,
        "single_active_token": not args.many_tokens,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--payments", type=int, default=4000)
    parser.add_argument("--limit", type=int, default=200, help="requests per second per creditor")
    parser.add_argument("--concurrency", type=int, default=64, help="execute_many concurrency per worker")
    parser.add_argument("--modes", default="redis,local", help="comma list of redis, local")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    parser.add_argument("--headroom", type=float, default=0.95, help="RedisRateLimiter(headroom=...)")
    parser.add_argument("--many-tokens", action="store_true", help="turn single-active-token mode off")
    parser.add_argument("--startup", type=float, default=3.0, help="seconds for the workers to get ready")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per worker")
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(json.loads(args.worker))
        return 0
    bad = False
    for mode in args.modes.split(","):
        row = run_mode(args, mode.strip())
        sys.stdout.write(json.dumps(row) + "\n")
        sys.stdout.flush()
        bad = bad or row["lost"] > 0 or row["duplicates"] > 0
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
