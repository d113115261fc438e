"""What llmcalls adds to a model call, against the raw openai client and LiteLLM, in one run.

    .venv/bin/pip install litellm          # for this benchmark only; not a Gatehouse dependency
    [REDIS_URL=redis://127.0.0.1:6379/1] .venv/bin/python bench/llm_overhead.py [--calls 1000]

It creates a fresh PostgreSQL database (bench_llm_overhead, see bench/common.py); with REDIS_URL
set the circuit breaker lives in Redis, as in production.

Everything talks to the same fake OpenAI-compatible provider (tests/llmcalls/fake_provider.py)
running in its own process on loopback, so the provider's time is the same for every path and the
differences are overhead. Measured, interleaved call by call:

  raw       openai.OpenAI(max_retries=0).chat.completions.create(...)      (the floor)
  complete  llmcalls.client.complete(...): route, breaker, budget-free route, cost, log INSERT
  proxy     the openai client pointed at /llm/v1 of Gatehouse served as production serves it:
            the Procfile's `web:` (granian WSGI, 2 workers x 8 threads; deploy/nginx.conf sends
            /llm/ there), a separate process; `--server` for another
  litellm   litellm.completion(model="openai/...", api_base=..., num_retries=0)
  hop       GET /llm/v1/models through the same server: the HTTP hop into Gatehouse with the
            key check and no model call, i.e. what any proxy in front of the provider costs
  bare      the bare proxy floor (bench/bare_proxy.py): the openai client pointed at the thinnest
            honest proxy on the same footing, a tiny WSGI app on granian WSGI with the same
            workers and threads that forwards the POST body to the fake over a kept-alive
            connection and returns the answer; what the hardware allows any proxy
  raw-stream, proxy-stream, bare-stream
            the same three with stream=True: time to the first token (the first chunk with
            content), the figure a streaming caller feels; the stream is then drained

and the import time of llmcalls.client (after django.setup()) and of litellm, in fresh processes.
LiteLLM is skipped (and said so) when it is not installed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
FAKE_PORT = 18350
PROXY_PORT = 18351
MESSAGES = [{"role": "user", "content": "Is order 42 eligible for a refund?"}]

DATABASE = "bench_llm_overhead"


from common import SERVERS, bench_env, fresh_database, manage, serve, stop_session  # noqa: E402


def wait_for_port(port: int, process: subprocess.Popen[bytes], seconds: float = 20) -> None:
    import socket

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"a helper process on port {port} exited early")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port} after {seconds}s")


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def import_time(code: str) -> float:
    """The best of five fresh interpreters, in milliseconds."""
    best = float("inf")
    for _ in range(5):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
        )
        best = min(best, float(out.stdout.strip().splitlines()[-1]))
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1000, help="measured calls per path")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--server", choices=sorted(SERVERS), default="granian-wsgi")
    parser.add_argument("--database", default=DATABASE)
    parser.add_argument("--skip-imports", action="store_true", help="skip the import timings")
    parser.add_argument("--no-litellm", action="store_true", help="skip LiteLLM even if installed")
    parser.add_argument("--fake-port", type=int, default=FAKE_PORT, help="the fake provider's")
    parser.add_argument("--port", type=int, default=PROXY_PORT, help="Gatehouse's")
    parser.add_argument(
        "--server-args",
        default="",
        help="more options for both servers, Gatehouse's and the bare proxy's (e.g. granian's "
        "'--runtime-mode st'), to measure a setting against the Procfile's",
    )
    parser.add_argument(
        "--bare-port", type=int, default=0, help="the bare proxy floor's (default: --port + 1)"
    )
    args = parser.parse_args()

    redis_url = os.environ.get("REDIS_URL", "")
    env = bench_env(args.database, LITELLM_LOCAL_MODEL_COST_MAP="True")  # LiteLLM: no download
    if redis_url:
        env["REDIS_URL"] = redis_url
    os.environ.clear()
    os.environ.update(env, DJANGO_SETTINGS_MODULE="config.settings")
    os.environ.setdefault("BENCH_PORT", str(args.port))
    fresh_database(args.database)
    manage(env, "migrate", "--noinput")

    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.llmcalls.fake_provider", str(args.fake_port), "900"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    extra = shlex.split(args.server_args)
    try:
        wait_for_port(args.fake_port, fake)
        with (
            serve(env, server=args.server, workers=2, threads=8, extra=extra) as base,
            bare_proxy(args.bare_port or args.port + 1, args.fake_port, extra) as bare,
        ):
            print(f"Gatehouse on {args.server} (2 workers, 8 threads) {extra or ''} at {base}")
            print(f"bare proxy floor on granian-wsgi (2 workers, 8 threads) at {bare}")
            run(args, base, bare)
    finally:
        fake.terminate()
        try:
            fake.wait(timeout=10)
        except subprocess.TimeoutExpired:
            fake.kill()


@contextlib.contextmanager
def bare_proxy(port: int, fake_port: int, extra: list[str]) -> Iterator[str]:
    """bench/bare_proxy.py on granian WSGI as the Procfile's `web:` runs Gatehouse (2 workers x 8
    threads, the same options); yields its base URL."""
    values = {"app": "bare_proxy:application", "port": port, "workers": 2, "threads": 8}
    argv = [sys.executable, *(part.format(**values) for part in SERVERS["granian-wsgi"]), *extra]
    env = {
        "PATH": os.environ.get("PATH", ""),
        "BARE_PROXY_UPSTREAM": f"http://127.0.0.1:{fake_port}/bench/v1",
    }
    process = subprocess.Popen(argv, cwd=ROOT / "bench", env=env, start_new_session=True)
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_session(process)


def bench_route(fake_port: int) -> tuple[str, str]:
    """The fake provider, its price, the feature `bench-llm` routed to it and a service allowed
    it: the provider's base URL and the service's key."""
    from datetime import timedelta

    from approvals import services as approvals_services
    from llmcalls import services
    from llmcalls.models import ModelPrice

    base_url = f"http://127.0.0.1:{fake_port}/bench/v1"
    services.provider_upsert(name="bench", base_url=base_url, api_key_env="")
    ModelPrice.objects.get_or_create(
        model="ok",
        provider="bench",
        defaults={"input_per_mtok": 1, "output_per_mtok": 2, "source": "benchmark"},
    )
    services.route_upsert(
        feature="bench-llm",
        targets=[("bench", "ok")],
        deadline=timedelta(seconds=10),
        cache_ttl=None,
        daily_budget_usd=None,
        over_budget="refuse",
        params={},
    )
    _, key = approvals_services.service_create(
        name="bench-llm", grants={"llm-features": ["bench-llm"]}
    )
    return base_url, key


def run(args: argparse.Namespace, gatehouse: str, bare: str) -> None:
    import django

    django.setup()
    import openai

    from llmcalls import client, services
    from llmcalls.models import LLMCall

    base_url, key = bench_route(args.fake_port)

    raw = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
    via_proxy = openai.OpenAI(base_url=f"{gatehouse}/llm/v1", api_key=key, max_retries=0)
    via_bare = openai.OpenAI(base_url=f"{bare}/v1", api_key="x", max_retries=0)

    def do_raw() -> None:
        raw.chat.completions.create(model="ok", messages=MESSAGES)  # type: ignore[arg-type]

    def do_complete() -> None:
        client.complete(feature="bench-llm", messages=MESSAGES)

    def do_proxy() -> None:
        via_proxy.chat.completions.create(model="ok", messages=MESSAGES)  # type: ignore[arg-type]

    def do_bare() -> None:
        via_bare.chat.completions.create(model="ok", messages=MESSAGES)  # type: ignore[arg-type]

    def do_hop() -> None:
        via_proxy.models.list()

    def first_token(client: openai.OpenAI) -> float:
        """Seconds from the request to the first chunk with content; then drain the stream."""
        started = time.perf_counter()
        first = 0.0
        stream: Any = client.chat.completions.create(
            model="ok",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
        )
        for chunk in stream:
            if not first and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - started
        return first

    def do_raw_stream() -> float:
        return first_token(raw)

    def do_proxy_stream() -> float:
        return first_token(via_proxy)

    def do_bare_stream() -> float:
        return first_token(via_bare)

    paths: dict[str, Callable[[], float | None]] = {
        "raw": do_raw,
        "complete": do_complete,
        "proxy": do_proxy,
        "bare": do_bare,
        "hop": do_hop,
        "raw-stream": do_raw_stream,
        "proxy-stream": do_proxy_stream,
        "bare-stream": do_bare_stream,
    }
    try:
        if args.no_litellm:
            raise ImportError
        import litellm

        litellm.telemetry = False

        def do_litellm() -> None:
            litellm.completion(
                model="openai/ok",
                api_base=base_url,
                api_key="x",
                messages=MESSAGES,
                num_retries=0,
            )

        paths["litellm"] = do_litellm
    except ImportError:
        print("litellm is not installed: `.venv/bin/pip install litellm` to compare with it.")

    samples: dict[str, list[float]] = {name: [] for name in paths}
    names = list(paths)
    for index in range(args.warmup + args.calls):
        random.shuffle(names)
        for name in names:
            started = time.perf_counter()
            ttft = paths[name]()
            if index >= args.warmup:
                took = ttft if ttft is not None else time.perf_counter() - started
                samples[name].append(took * 1000)

    # The log write on its own, for the record.
    record = LLMCall.objects.filter(feature="bench-llm").order_by("-created_at").first()
    assert record is not None
    writes = []
    for _ in range(300):
        fields = {f.attname: getattr(record, f.attname) for f in LLMCall._meta.concrete_fields}
        fields.pop("id")
        started = time.perf_counter()
        services.call_log_write(record=fields)
        writes.append((time.perf_counter() - started) * 1000)

    raw_p50, raw_p99 = percentiles(samples["raw"])
    print(f"\nllmcalls overhead, {args.calls} calls per path, same fake provider, one run")
    print(f"load average: {os.getloadavg()}")
    print(f"circuit breaker state: {'Redis' if os.environ.get('REDIS_URL') else 'in-process'}")
    print(
        f"{'path':<10} {'p50 ms':>8} {'p99 ms':>8} {'+p50 ms':>8} {'+p99 ms':>8} {'p50 ratio':>9}"
    )
    for name in names_in_order(samples):
        if name in {"hop", "raw-stream", "proxy-stream", "bare-stream"}:
            continue
        p50, p99 = percentiles(samples[name])
        print(
            f"{name:<10} {p50:8.3f} {p99:8.3f} {p50 - raw_p50:8.3f} {p99 - raw_p99:8.3f} "
            f"{p50 / raw_p50:9.2f}"
        )
    hop50, hop99 = percentiles(samples["hop"])
    proxy50 = percentiles(samples["proxy"])[0]
    print(
        f"hop floor (GET /llm/v1/models via {args.server}): p50 {hop50:.3f} ms, p99 {hop99:.3f} ms; "
        f"proxy minus raw minus hop: p50 {proxy50 - raw_p50 - hop50:.3f} ms"
    )
    s50, s99 = percentiles(samples["raw-stream"])
    p50s, p99s = percentiles(samples["proxy-stream"])
    print(
        f"time to first token, stream=True: raw p50 {s50:.3f} ms p99 {s99:.3f} ms; proxy p50 "
        f"{p50s:.3f} ms p99 {p99s:.3f} ms; added p50 {p50s - s50:.3f} ms, p99 {p99s - s99:.3f} ms"
    )
    b50s, b99s = percentiles(samples["bare-stream"])
    print(
        f"time to first token through the bare proxy floor: p50 {b50s:.3f} ms p99 {b99s:.3f} ms; "
        f"added p50 {b50s - s50:.3f} ms, p99 {b99s - s99:.3f} ms"
    )
    added = percentiles(samples["proxy"])[0] - raw_p50
    bare_added = percentiles(samples["bare"])[0] - raw_p50
    print(
        f"over raw, p50: the bare proxy floor adds {bare_added:.3f} ms, Gatehouse's proxy "
        f"{added:.3f} ms (our stack beyond the bare proxy: {added - bare_added:.3f} ms); "
        f"to the first token: bare {b50s - s50:.3f} ms, Gatehouse {p50s - s50:.3f} ms "
        f"(beyond: {p50s - b50s:.3f} ms)"
    )
    print(
        f"target: the proxy adds p50 <= 2 ms: {'yes' if added <= 2 else 'NO'} ({added:.3f} ms); "
        f"streaming, to the first token: {'yes' if p50s - s50 <= 2 else 'NO'} ({p50s - s50:.3f} ms)"
    )
    w50, w99 = percentiles(writes)
    print(f"log write alone (call_log_write, one INSERT): p50 {w50:.3f} ms, p99 {w99:.3f} ms")

    ours = percentiles(samples["complete"])[0] - raw_p50
    print(f"\ntarget: complete adds p50 <= 2 ms: {'yes' if ours <= 2 else 'NO'} ({ours:.3f} ms)")
    if "litellm" in samples:
        theirs = percentiles(samples["litellm"])[0] - raw_p50
        print(
            f"target: below LiteLLM's added p50 ({theirs:.3f} ms): {'yes' if ours < theirs else 'NO'}"
        )

    if args.skip_imports:
        return
    setup = (
        "import os,time,django;os.environ.setdefault('DJANGO_SETTINGS_MODULE','config.settings');"
        "django.setup();t=time.perf_counter();"
    )
    ours_import = import_time(setup + "import llmcalls.client;print(time.perf_counter()-t)")
    openai_import = import_time(
        "import time;t=time.perf_counter();import openai;print(time.perf_counter()-t)"
    )
    print(f"\nimport llmcalls.client (after django.setup): {ours_import:.0f} ms")
    print(f"import openai alone:                          {openai_import:.0f} ms")
    if "litellm" in samples:
        theirs_import = import_time(
            "import time;t=time.perf_counter();import litellm;print(time.perf_counter()-t)"
        )
        print(
            f"import litellm:                               {theirs_import:.0f} ms "
            f"({theirs_import / ours_import:.1f}x llmcalls.client)"
        )


def names_in_order(samples: dict[str, Any]) -> list[str]:
    order: tuple[str, ...] = ("raw", "complete", "proxy", "bare", "litellm", "hop", "raw-stream")
    order += ("proxy-stream", "bare-stream")
    return [n for n in order if n in samples]


if __name__ == "__main__":
    main()
