"""The submit operation in-process, without HTTP: what 50 rules add to one proposal.

`services.proposal_submit` on a fresh PostgreSQL database, 2,000 calls per round, one thread,
rounds alternating between no enabled rules (the floor) and 50 enabled rules (bench/rulesets.py,
none matching, so all 50 run and the trace has 50 entries). The rules cache is warm and kept
fresh by the NOTIFY listener, as in a server process. Prints p50 per submit and the ratio.

    .venv/bin/python bench/rules_submit.py [--submits 2000] [--rounds 3] [--rules 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

from api_submit import BODY, CONFIG  # noqa: E402
from common import bench_env, fresh_database, manage  # noqa: E402
from rulesets import synthetic_rules_yaml  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--submits", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rules", type=int, default=50)
    parser.add_argument("--database", default="gh_rules_bench_submit")
    args = parser.parse_args()

    fresh_database(args.database)
    env = bench_env(args.database)
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "apply", "-", stdin=CONFIG + synthetic_rules_yaml(args.rules))
    manage(env, "create_service", "bench", "--action-types", "refund.issue")
    os.environ.update(env, DJANGO_SETTINGS_MODULE="config.settings")

    import django

    django.setup()
    from approvals import rules, services
    from approvals.models import Rule, Service

    service = Service.objects.get(name="bench")

    def submit_p50(n: int) -> float:
        samples = []
        for _ in range(n):
            started = time.perf_counter()
            services.proposal_submit(service=service, data=dict(BODY))
            samples.append(time.perf_counter() - started)
        return statistics.median(samples) * 1000

    def switch(enabled: bool) -> None:
        Rule.objects.update(enabled=enabled)  # the trigger's NOTIFY reaches the listener
        deadline = time.monotonic() + 10
        expected = args.rules if enabled else 0
        while len(rules.current_ruleset().rules) != expected:
            if time.monotonic() > deadline:
                raise SystemExit("the rules cache did not follow the change")
            time.sleep(0.05)

    submit_p50(200)  # warm up
    floor, loaded = [], []
    for _ in range(args.rounds):
        switch(False)
        floor.append(submit_p50(args.submits))
        switch(True)
        loaded.append(submit_p50(args.submits))
    f, r = min(floor), min(loaded)
    print(f"proposal_submit in-process, {args.submits} submits a round, best of {args.rounds}:")
    print(f"  floor, no enabled rules: p50 {f:.3f} ms")
    print(f"  {args.rules} enabled rules:        p50 {r:.3f} ms  (+{r - f:.3f} ms)")
    print(f"ratio of throughputs (floor time / with rules): {f / r:.2f}")
    rules._listener.stop()


if __name__ == "__main__":
    main()
