"""What one costly rule does to a submit, and what bounding it costs (docs/rules.md, "Limits").

1. The attack: `payload.items.exists(x, payload.items.exists(y, x == y + 1.0))` over N items,
   run straight through the Rust evaluator (what Gatehouse did before the bound), with a
   ticker thread that wakes every 10 ms: its longest gap is how long every other request of
   the process (a /healthz in another thread) waited, since the evaluator holds the GIL.
2. The same rule through `rules.evaluate` (the cost bound refuses it before it runs).
3. The constants of approvals/celcost.py: ns per comprehension step, per element walked by
   `in`, per byte scanned by `contains`.
4. The alternative: evaluating in a child process that can be killed — the round trip per
   proposal through a persistent multiprocessing worker, for a small payload.

    .venv/bin/python bench/rules_cost.py [--items 1000,3000] [--skip-attack]
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "1")

import cel  # noqa: E402
import django  # noqa: E402

django.setup()

from approvals import rules as engine  # noqa: E402
from approvals.models import ActionType, Proposal, Service  # noqa: E402

ATTACK = "payload.items.exists(x, payload.items.exists(y, x == y + 1.0))"


def raw_with_ticker(expression: str, payload: dict[str, Any]) -> tuple[float, float]:
    program = cel.compile(expression)
    context = cel.Context({"payload": payload})
    ticks: list[float] = []
    stop = threading.Event()

    def tick() -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.01)

    ticker = threading.Thread(target=tick)
    ticker.start()
    time.sleep(0.05)
    started = time.perf_counter()
    program.execute(context)
    elapsed = time.perf_counter() - started
    time.sleep(0.05)
    stop.set()
    ticker.join()
    gap = max(b - a for a, b in itertools.pairwise(ticks))
    return elapsed, gap


def guarded(expression: str, payload: dict[str, Any]) -> tuple[float, str, str]:
    spec = engine.RuleSpec(name="attack", when="true", outcome="approve", version=1)
    # compile_rule would refuse the condition at save; build it as a rule saved before the bound
    from approvals import celcost

    rule = engine.CompiledRule(
        spec=spec.model_copy(update={"when": expression}),
        program=cel.compile(expression),
        uses_stats=False,
        cost=celcost.shape(expression),
    )
    proposal = Proposal(confidence=0.9, payload=payload)
    started = time.perf_counter()
    decision = engine.evaluate(
        proposal=proposal,
        service=Service(pk=1, name="shop"),
        action_type=ActionType(pk=1, key="bulk.op", irreversible=False, risk="low"),
        rules=[rule],
    )
    return time.perf_counter() - started, decision.outcome, decision.trace[-1].get("error", "")


def per_unit(expression: str, payload: dict[str, Any], units: int, repeat: int = 5) -> float:
    program = cel.compile(expression)
    context = cel.Context({"payload": payload})
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        program.execute(context)
        samples.append(time.perf_counter() - started)
    return min(samples) / units * 1e9


def _child(conn: Any) -> None:
    program = cel.compile("payload.amount <= 50.0 && confidence >= 0.9")
    while True:
        message = conn.recv()
        if message is None:
            return
        conn.send(program.execute(cel.Context(message)))


def subprocess_round_trip(rounds: int = 2000) -> tuple[float, float]:
    parent, child = multiprocessing.Pipe()
    worker = multiprocessing.get_context("fork").Process(target=_child, args=(child,))
    worker.start()
    program = cel.compile("payload.amount <= 50.0 && confidence >= 0.9")
    variables = {"payload": {"order_id": "ORD-1", "amount": 20.0, "currency": "EUR"}}
    variables["confidence"] = 0.95  # type: ignore[assignment]
    inproc, remote = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        program.execute(cel.Context(variables))
        inproc.append(time.perf_counter() - started)
        started = time.perf_counter()
        parent.send(variables)
        parent.recv()
        remote.append(time.perf_counter() - started)
    parent.send(None)
    worker.join(5)
    return statistics.median(inproc) * 1e6, statistics.median(remote) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", default="1000,3000")
    parser.add_argument("--skip-attack", action="store_true")
    args = parser.parse_args()
    sizes = [int(n) for n in args.items.split(",")]
    print(f"rule: {ATTACK}")
    for n in sizes:
        payload = {"items": [float(i * 2) for i in range(n)]}  # no match: the whole square
        if not args.skip_attack:
            elapsed, gap = raw_with_ticker(ATTACK, payload)
            print(
                f"  {n:>6} items, unbounded: {elapsed * 1000:10.1f} ms, other threads held "
                f"{gap * 1000:.1f} ms"
            )
        elapsed, outcome, error = guarded(ATTACK, payload)
        print(f"  {n:>6} items, bounded:   {elapsed * 1000:10.3f} ms -> {outcome} ({error})")
    n = 100_000
    step = per_unit("payload.items.exists(x, x < 0.0)", {"items": [1.0] * n}, n * 3)
    element = per_unit("-1.0 in payload.items", {"items": [1.0] * n}, n)
    text = "a" * 10_000_000
    byte = per_unit("payload.s.contains('b')", {"s": text}, len(text))
    print(f"celcost constants: step {step:.0f} ns, element {element:.1f} ns, byte {byte:.3f} ns")
    inproc, remote = subprocess_round_trip()
    print(f"evaluate in process: {inproc:.1f} us; in a worker process (pipe): {remote:.1f} us")


if __name__ == "__main__":
    main()
