"""`amili demo` (`python -m amili_async demo`): a realistic mix of actions against an in-memory Amili.

No network and no configuration: it seeds the fake (`_demo_plan`), runs the actions through the SDK
concurrently with respite checks beside them, and prints a table of outcomes by kind, the reasons, the
throughput, the token requests, and whether every action produced exactly one outcome (exit 1 if not).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import anyio

from .._progress import Progress
from ..errors import AmiliError
from ._common import EXIT_FAILED, EXIT_OK, dumps, say, warn, write_out
from ._demo_plan import DemoPlan, seed_demo

_KINDS = ("payment", "crediting", "cancellation", "respite", "respite check")


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_demo(args))


class _Tally:
    def __init__(self) -> None:
        self.rows: dict[str, Counter[str]] = {kind: Counter() for kind in _KINDS}
        self.refused: dict[str, Counter[str]] = {kind: Counter() for kind in _KINDS}
        self.reasons: Counter[str] = Counter()

    def receipt(self, kind: str, receipt: Any) -> str:
        status = getattr(receipt, "status", None)
        column = "warning" if status == "warning" else "business_error" if status == "error" else "ok"
        reason = getattr(receipt, "status_reason_locale", None)
        if reason:
            self.reasons[reason] += 1
        self.rows[kind][column] += 1
        self.rows[kind]["total"] += 1
        return column

    def error(self, kind: str, exc: BaseException) -> None:
        self.rows[kind]["refused"] += 1
        self.rows[kind]["total"] += 1
        self.refused[kind][type(exc).__name__] += 1
        for field, messages in getattr(exc, "issues", {}).items():
            for message in messages:
                text = re.sub(r"'[^']*'", "'…'", message)
                self.reasons[text if field in ("respite", "_") else f"{field}: {text}"] += 1

    def check(self, allowed: bool, issues: Sequence[str]) -> None:
        row = self.rows["respite check"]
        row["total"] += 1
        if allowed:
            row["ok"] += 1
        else:
            row["refused"] += 1
            self.refused["respite check"]["not allowed"] += 1
            self.reasons.update(issues)


async def _demo(args: argparse.Namespace) -> int:
    from ..testing import FakeAmili

    n_cases = args.cases
    rng = random.Random(args.seed)
    started = time.perf_counter()
    fake = FakeAmili(seed=args.seed, record_requests=False)
    creditor = fake.add_creditor(
        name="Demo Creditor AB", respite_max_days=30, respite_max_per_case=1, respite_max_per_customer=3
    )
    cases = seed_demo(fake, creditor.id, n_cases, rng)
    seeding = time.perf_counter() - started
    plan = DemoPlan(rng, cases, creditor.id, args.seed)
    n_actions = n_cases * 2
    n_checks = max(1, n_cases * 3 // 10)
    tally = _Tally()
    seen = bytearray(n_actions)
    extra_outcomes = 0
    checks_done = 0
    check_workers = max(1, args.concurrency // 8)

    async with fake.client(creditor) as client:
        run_started = time.perf_counter()
        progress = Progress(n_actions + n_checks, label="demo", unit="actions", enabled=not args.quiet)

        async def run_actions() -> None:
            nonlocal extra_outcomes
            async for outcome in client.execute_many(plan.actions(n_actions), concurrency=args.concurrency):
                if 0 <= outcome.index < n_actions and seen[outcome.index] == 0:
                    seen[outcome.index] = 1
                else:
                    extra_outcomes += 1
                kind = type(outcome.action).kind
                if outcome.error is not None:
                    tally.error(kind, outcome.error)
                else:
                    tally.receipt(kind, outcome.receipt)
                progress.advance()

        checks = plan.checks(n_checks)

        async def run_checks() -> None:
            nonlocal checks_done
            for case_id in checks:  # shared by the workers: each pulls the next case
                try:
                    result = await client.respite.check(case_id)
                except AmiliError as exc:
                    tally.error("respite check", exc)
                else:
                    tally.check(result.allowed, result.issues)
                progress.advance()
                checks_done += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(run_actions)
            for _ in range(check_workers):
                tg.start_soon(run_checks)
        elapsed = time.perf_counter() - run_started
        progress.close()
        token_requests = client.token_requests

    outcomes = sum(row["total"] for row in tally.rows.values())
    total = n_actions + n_checks
    complete = (
        plan.yielded == n_actions and all(seen) and extra_outcomes == 0 and checks_done == n_checks
    ) and outcomes == total
    summary: dict[str, Any] = {
        "cases": n_cases,
        "seed": args.seed,
        "concurrency": args.concurrency,
        "actions": total,
        "outcomes": outcomes,
        "one_outcome_per_action": complete,
        "by_kind": {
            kind: {
                "total": tally.rows[kind]["total"],
                "ok": tally.rows[kind]["ok"],
                "warning": tally.rows[kind]["warning"],
                "business_error": tally.rows[kind]["business_error"],
                "refused": tally.rows[kind]["refused"],
                "refused_by": dict(tally.refused[kind].most_common()),
            }
            for kind in _KINDS
        },
        "payments_by_invoice_number": plan.by_invoice_count,
        "reasons": dict(tally.reasons.most_common()),
        "seeding_seconds": round(seeding, 3),
        "elapsed_seconds": round(elapsed, 3),
        "throughput_per_second": round(total / elapsed, 1) if elapsed > 0 else None,
        "token_requests": token_requests,
        "tokens_issued": fake.tokens_issued,
    }
    if args.json:
        write_out(dumps(summary, pretty=True))
    else:
        say(_demo_table(summary))
    if not complete:
        warn(
            f"error: {outcomes:,} outcomes for {total:,} actions "
            f"({extra_outcomes} duplicates): every action must produce exactly one"
        )
        return EXIT_FAILED
    return EXIT_OK


def _demo_table(s: Mapping[str, Any]) -> str:
    head = ("kind", "total", "ok", "warning", "business error", "refused")
    rows: list[tuple[str, ...]] = []
    sums = Counter[str]()
    for kind, row in s["by_kind"].items():
        values = (row["total"], row["ok"], row["warning"], row["business_error"], row["refused"])
        rows.append((kind, *(f"{v:,}" for v in values)))
        sums.update(dict(zip(("total", "ok", "warning", "business_error", "refused"), values, strict=True)))
    rows.append(("all", *(f"{sums[k]:,}" for k in ("total", "ok", "warning", "business_error", "refused"))))
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def fmt(r: Sequence[str]) -> str:
        return "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))

    lines = [
        f"amili demo: {s['cases']:,} cases in an in-memory Amili, {s['actions']:,} actions, "
        f"concurrency {s['concurrency']}, seed {s['seed']}",
        "",
        fmt(head),
        fmt(["-" * w for w in widths]),
        *(fmt(r) for r in rows),
        "",
    ]
    for kind, row in s["by_kind"].items():
        if row["refused_by"]:
            refusals = ", ".join(f"{name} {count:,}" for name, count in row["refused_by"].items())
            lines.append(f"refused {kind}: {refusals}")
    if s["reasons"]:
        top = list(s["reasons"].items())[:10]
        width = max(len(reason) for reason, _ in top)
        lines.append("why (warnings, business errors, refusals):")
        lines.extend(f"  {reason.ljust(width)}  {count:>6,}" for reason, count in top)
    lines.append(f"payments identified by invoice number + creditor: {s['payments_by_invoice_number']:,}")
    lines.append(
        f"elapsed {s['elapsed_seconds']:.2f} s ({s['seeding_seconds']:.2f} s seeding), "
        f"throughput {s['throughput_per_second'] or 0:,.0f} actions/s"
    )
    lines.append(f"token requests: client {s['token_requests']}, in-memory Amili issued {s['tokens_issued']}")
    verdict = "yes" if s["one_outcome_per_action"] else "NO"
    lines.append(f"every action produced exactly one outcome: {verdict} ({s['outcomes']:,}/{s['actions']:,})")
    return "\n".join(lines)
