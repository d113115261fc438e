"""What metrics, JSON logs and traces cost a submit, measured inside the process.

The same request as bench/api_submit.py (POST /api/v1/proposals, the whole Django stack through
Django's test client: middleware, API, rules, the INSERT) in one process per mode, with the CPU
that process spent a request (time.process_time, so other work on a shared machine does not
count; PostgreSQL's own CPU is not included). Modes, each a fresh process, in alternating rounds:

- off: no METRICS_TOKEN, LOG_FORMAT=text at LOG_LEVEL=WARNING (nothing logged per submit);
- on: METRICS_TOKEN, PROMETHEUS_MULTIPROC_DIR, LOG_FORMAT=json at INFO (a line per decision,
  written to a file);
- on + OpenTelemetry: also OTEL_EXPORTER_OTLP_ENDPOINT at a receiver on loopback (in this
  script's process: its CPU is not counted; the exporter's thread in the measured one is).

    .venv/bin/python bench/observability_submit.py [--requests 2000] [--rounds 3] [--parts]

On a loaded machine the whole-request figures move by ±15% from run to run; `--parts` times only
what observability adds to a submit (the request id, the counters and histogram, the decision's
log line through the configured handler), 20,000 times in a loop, in each mode.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from api_submit import BODY, CONFIG, _otlp_sink
from common import PYTHON, ROOT, bench_env, fresh_database, manage

PARTS = """
import json, logging, os, sys, time, uuid
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
import django
django.setup()
from telemetry import logs, metrics
log = logging.getLogger("gatehouse.decisions")
count = int(sys.argv[1])
pid = str(uuid.uuid4())
def one():
    token = logs.request_id.set(logs.sanitize_request_id(None))
    metrics.PROPOSALS_SUBMITTED.labels("refund.issue").inc()
    log.info("proposal %s %s by %s", pid, "pending_review", "policy", extra={
        "service": "bench", "proposal_id": pid, "action_type": "refund.issue",
        "outcome": "review", "rule": "", "rule_version": None})
    metrics.SUBMIT_SECONDS.observe(0.003)
    logs.request_id.reset(token)
for _ in range(2000):
    one()
cpu = time.process_time()
for _ in range(count):
    one()
print(json.dumps({"cpu_us": (time.process_time() - cpu) / count * 1e6}))
"""

PROBE = """
import json, os, sys, time
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
import django
django.setup()
from django.test import Client
key, body, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = Client(HTTP_AUTHORIZATION="Bearer " + key)
for _ in range(200):  # warm: imports, pools, caches
    assert client.post("/api/v1/proposals", body, content_type="application/json").status_code == 201
cpu, wall = time.process_time(), time.perf_counter()
for _ in range(count):
    client.post("/api/v1/proposals", body, content_type="application/json")
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
print(json.dumps({"cpu_us": cpu / count * 1e6, "wall_us": wall / count * 1e6}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database", default="gatehouse_bench_obs")
    parser.add_argument("--parts", action="store_true", help="time only what observability adds")
    args = parser.parse_args()
    if args.parts:
        parts(args)
        return

    fresh_database(args.database)
    env = bench_env(args.database, ALLOWED_HOSTS="testserver")
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "apply", "-", stdin=CONFIG)
    key = json.loads(
        manage(env, "create_service", "bench", "--action-types", "refund.issue", "--json")
    )["api_key"]
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="gh-obs-") as folder, _otlp_sink() as sink:
        on = {**env, "METRICS_TOKEN": "bench-token-0123456789", "LOG_FORMAT": "json"}
        on["LOG_LEVEL"] = "INFO"
        modes = {
            "off": env,
            "metrics + JSON logs": on,
            "  … + OpenTelemetry": {**on, "OTEL_EXPORTER_OTLP_ENDPOINT": sink},
        }
        for round_number in range(args.rounds):
            for index, (name, mode_env) in enumerate(modes.items()):
                run_env = dict(mode_env)
                if "METRICS_TOKEN" in run_env:
                    metrics_dir = Path(folder, f"metrics-{round_number}-{index}")
                    metrics_dir.mkdir()
                    run_env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
                with Path(folder, f"{index}.log").open("ab") as log:
                    done = subprocess.run(
                        [PYTHON, "-c", PROBE, key, json.dumps(BODY), str(args.requests)],
                        cwd=ROOT,
                        env=run_env,
                        stdout=subprocess.PIPE,
                        stderr=log,
                        check=False,
                        timeout=600,
                    )
                if done.returncode:
                    log_text = Path(folder, f"{index}.log").read_text(errors="replace")
                    raise SystemExit(f"{name}: the probe failed:\n{log_text[-3000:]}")
                figures = json.loads(done.stdout.decode().strip().splitlines()[-1])
                results.setdefault(name, []).append(figures["cpu_us"])
        lines = Path(folder, "1.log").read_bytes().count(b"\n{")
    off = statistics.median(results["off"])
    print(
        f"\n{args.requests} submits a run, {args.rounds} rounds; CPU of the Django process a submit"
    )
    for name, values in results.items():
        median = statistics.median(values)
        print(
            f"{name:24} {median:8.0f} µs  ({', '.join(f'{v:.0f}' for v in values)})  "
            f"{median / off:.3f} x off, +{median - off:.0f} µs"
        )
    print(f"(the JSON-logging runs wrote {lines} log lines)")


def parts(args: argparse.Namespace) -> None:
    env = bench_env(args.database)
    with tempfile.TemporaryDirectory(prefix="gh-obs-") as folder:
        on = {**env, "METRICS_TOKEN": "bench-token-0123456789", "LOG_FORMAT": "json"}
        on.update(LOG_LEVEL="INFO", PROMETHEUS_MULTIPROC_DIR=folder)
        results: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            for name, mode_env in (("off", env), ("metrics + JSON logs", on)):
                with Path(folder, "parts.log").open("ab") as log:
                    done = subprocess.run(
                        [PYTHON, "-c", PARTS, "20000"],
                        cwd=ROOT,
                        env=mode_env,
                        stdout=subprocess.PIPE,
                        stderr=log,
                        check=True,
                        timeout=600,
                    )
                value = json.loads(done.stdout.decode().strip().splitlines()[-1])["cpu_us"]
                results.setdefault(name, []).append(value)
    print("\nWhat observability adds to one submit (request id, counter, histogram, log line):")
    for name, values in results.items():
        print(
            f"{name:24} {statistics.median(values):6.1f} µs  ({', '.join(f'{v:.1f}' for v in values)})"
        )


if __name__ == "__main__":
    main()
