"""Where a submit's CPU goes: `POST /api/v1/proposals` in-process, timed stage by stage.

    bench/api_submit.py --profile-stages [--rules 50]     (sets up the database, then runs this)

Runs Gatehouse's real WSGI application (config.wsgi, every middleware) in this process, without
a server or a socket, for `--requests` submits one after another, and times each stage with
`time.thread_time_ns` (CPU of this thread: other work on the machine does not count) and
`time.perf_counter_ns` (wall, which includes waiting for PostgreSQL and Redis). Each stage is the
function(s) that do it, wrapped for the run; time is exclusive, so a stage's figure never
includes the stages it calls (the request parser's `jsonvalues.check` is parsing, the submit's own
re-check of the data is schema). What no stage claims is "Django handler" (building the request,
URL resolving, ninja's dispatch, the view's own lines). Stages:

  middleware        each middleware's __call__ / process_* (named one by one)
  authentication    the bearer key check (ninja's HttpBearer and api_key_authenticate)
  parsing           reading the body and the strict JSON parser
  schema            pydantic's ProposalIn, model_dump, the re-check and the payload's JSON Schema
  rules             decisions.decide_automatically (the ruleset, every condition, the trace)
  insert            the proposal and its audit events (one statement), the atomic block
  idempotency       the advisory lock, the lookup, the request hash (with --new-keys)
  response          the representation, its JSON, the HttpResponse
  live-update check events.proposal_changed (whether a reviewer page listens)
  observability     metrics, the decision's log line, spans

The wrappers cost about 1 µs a call, which lands on the caller's stage. `--cprofile FILE` also
writes a cProfile of the measured requests (open with `python -m pstats FILE`).
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class Stages:
    """Exclusive CPU and wall nanoseconds per stage name, with a stack for nesting."""

    def __init__(self) -> None:
        self.cpu: dict[str, int] = defaultdict(int)
        self.wall: dict[str, int] = defaultdict(int)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[list[int]] = []

    def timed(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        children = [0, 0]
        self._stack.append(children)
        cpu, wall = time.thread_time_ns(), time.perf_counter_ns()
        try:
            return fn(*args, **kwargs)
        finally:
            cpu, wall = time.thread_time_ns() - cpu, time.perf_counter_ns() - wall
            self._stack.pop()
            self.cpu[name] += cpu - children[0]
            self.wall[name] += wall - children[1]
            self.calls[name] += 1
            if self._stack:
                self._stack[-1][0] += cpu
                self._stack[-1][1] += wall

    def wrap(self, name: str | Callable[[Any], str], fn: Callable[..., Any]) -> Callable[..., Any]:
        """`fn` timed as stage `name` (or name(first argument), for methods shared by classes)."""
        stages = self

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            label = name if isinstance(name, str) else name(args[0])
            return stages.timed(label, fn, *args, **kwargs)

        timed.__wrapped_stage__ = True  # type: ignore[attr-defined]
        return timed

    def reset(self) -> None:
        self.cpu.clear()
        self.wall.clear()
        self.calls.clear()


def patch_everywhere(stages: Stages, name: str, fn: Callable[..., Any]) -> None:
    """Replace `fn` by its timed self in every loaded module that holds it by name (the module
    that defines it and those that imported it), so a call by any path is timed."""
    if getattr(fn, "__wrapped_stage__", False):
        return
    timed = stages.wrap(name, fn)
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        if not namespace:
            continue
        for attr, value in list(namespace.items()):
            if value is fn:
                setattr(module, attr, timed)


def patch_method(stages: Stages, name: str | Callable[[Any], str], cls: type, attr: str) -> None:
    fn = cls.__dict__.get(attr)
    if fn is None or getattr(fn, "__wrapped_stage__", False):
        return
    setattr(cls, attr, stages.wrap(name, fn))


def find(*paths: str) -> Callable[..., Any] | None:
    """The first of "module:attribute" that exists (code moves between modules)."""
    import importlib

    for path in paths:
        module_name, attr = path.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        value = getattr(module, attr, None)
        if value is not None:
            return value  # type: ignore[no-any-return]
    return None


def instrument(stages: Stages) -> list[str]:
    """Wrap each stage's functions; returns what could not be found (printed as a warning)."""
    from django.conf import settings
    from django.utils.module_loading import import_string
    from ninja.operation import Operation

    from approvals import api

    missing: list[str] = []

    def middleware_name(instance: Any) -> str:
        return f"middleware: {type(instance).__name__}"

    for dotted in settings.MIDDLEWARE:
        cls = import_string(dotted)
        for klass in cls.__mro__:
            for attr in ("__call__", "process_request", "process_view", "process_response"):
                if attr in klass.__dict__ and klass is not object:
                    patch_method(stages, middleware_name, klass, attr)

    auth = api.api.auth[0] if isinstance(api.api.auth, list | tuple) else api.api.auth
    # The class whose __call__ reads the bearer token: ninja's HttpBearer, or the app's own.
    reader = next(k for k in type(auth).__mro__ if "__call__" in k.__dict__)
    patch_method(stages, "authentication", reader, "__call__")
    patch_method(stages, "parsing", type(api.api.parser), "parse_body")
    from django.core.handlers.base import BaseHandler
    from django.db.backends.base.base import BaseDatabaseWrapper
    from ninja.operation import PathView

    patch_method(
        stages, "Django handler: _get_response (URL, view call)", BaseHandler, "_get_response"
    )
    patch_method(stages, "Django handler: ninja's dispatch", PathView, "_sync_view")
    patch_method(stages, "Django handler: ninja's dispatch", Operation, "run")
    patch_method(stages, "database connection: from the pool", BaseDatabaseWrapper, "connect")
    patch_method(stages, "database connection: back to the pool", BaseDatabaseWrapper, "close")
    patch_method(stages, "schema: pydantic (ninja's _get_values)", Operation, "_get_values")
    patch_method(stages, "response: ninja's _result_to_response", Operation, "_result_to_response")
    stages_by_path = {
        "authentication": ["approvals.services:api_key_authenticate"],
        "schema: jsonvalues.check": ["foundation.jsonvalues:check", "approvals.jsonvalues:check"],
        "schema: payload JSON Schema": ["approvals.schemas_cache:validate_payload"],
        "rules": ["approvals.decisions:decide_automatically"],
        "insert": [
            "approvals.services.proposals:_record_proposal",
            "approvals.services.submit:_record_proposal",
            "approvals.services:_record_proposal",
        ],
        # A new key's lock, check and insert are one statement (bulk.insert_rows_if).
        "insert: with the key's lock and check": [
            "approvals.services.proposals:_record_keyed_proposal"
        ],
        "idempotency": [
            "approvals.services.proposals:_idempotent_replay",
            "approvals.services.submit:_idempotent_replay",
            "approvals.services:_idempotent_replay",
        ],
        "idempotency: payload_hash": ["approvals.models:payload_hash"],
        "response: representation": ["approvals.representation:proposal_representation"],
        "response: JSON": ["foundation.jsonfast:dumps", "approvals.jsonfast:dumps"],
        "live-update check": ["approvals.events:proposal_changed"],
        "observability": [
            "approvals.services.proposals:_observe_submit",
            "approvals.services.submit:_observe_submit",
            "approvals.services:_observe_submit",
        ],
    }
    for name, paths in stages_by_path.items():
        fn = find(*paths)
        if fn is None:
            missing.append(f"{name} ({paths[0]})")
            continue
        patch_everywhere(stages, name, fn)
    # The submit's own lines (the decision's scaffolding, the atomic block) and the view's.
    for name, paths in {
        "submit (the service's own lines)": [
            "approvals.services.proposals:proposal_submit",
            "approvals.services.submit:proposal_submit",
            "approvals.services:proposal_submit",
        ],
        "submit: building the proposal": [
            "approvals.services.proposals:_new_proposal",
            "approvals.services.proposals:_decide_proposal",
            "approvals.services.submit:_decide_proposal",
            "approvals.services:_decide_proposal",
        ],
    }.items():
        fn = find(*paths)
        if fn is None:
            missing.append(f"{name} ({paths[0]})")
        else:
            patch_everywhere(stages, name, fn)
    return missing


def environ(body: bytes, key: str, idempotency_key: str | None) -> dict[str, Any]:
    env = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/api/v1/proposals",
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_AUTHORIZATION": f"Bearer {key}",
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }
    if idempotency_key is not None:
        env["HTTP_IDEMPOTENCY_KEY"] = idempotency_key
    return env


def run(
    application: Any, stages: Stages, body: bytes, key: str, count: int, new_keys: bool, tag: str
) -> None:
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        statuses.append(status)

    def one(env: dict[str, Any]) -> None:
        result = application(env, start_response)
        try:
            for _ in result:
                pass
        finally:
            result.close()  # request_finished: the connection goes back to the pool

    for index in range(count):
        env = environ(body, key, f"{tag}-{index}" if new_keys else None)
        stages.timed("Django handler (request, URL, ninja, the view's lines)", one, env)
        if not statuses[-1].startswith("201"):
            raise SystemExit(f"submit answered {statuses[-1]}, not 201")


STAGE_ORDER = (
    "middleware",
    "authentication",
    "parsing",
    "schema",
    "rules",
    "idempotency",
    "insert",
    "response",
    "live-update check",
    "observability",
    "submit",
    "database connection",
    "Django handler",
)


def report(stages: Stages, count: int, title: str) -> dict[str, Any]:
    total_cpu = sum(stages.cpu.values()) / count / 1000
    total_wall = sum(stages.wall.values()) / count / 1000
    groups: dict[str, list[str]] = defaultdict(list)
    for name in stages.cpu:
        groups[name.split(":")[0].split(" (")[0]].append(name)
    print(f"\n{title}: {count} submits, µs per request (exclusive), CPU of this thread and wall")
    print(f"{'stage':58} {'CPU µs':>8} {'%':>5} {'wall µs':>8}")
    summary: dict[str, Any] = {}
    for group in sorted(groups, key=lambda g: STAGE_ORDER.index(g) if g in STAGE_ORDER else 99):
        names = groups[group]
        cpu = sum(stages.cpu[n] for n in names) / count / 1000
        wall = sum(stages.wall[n] for n in names) / count / 1000
        summary[group] = {"cpu_us": round(cpu, 1), "wall_us": round(wall, 1)}
        print(f"{group:58} {cpu:8.1f} {cpu / total_cpu * 100:5.1f} {wall:8.1f}")
        if len(names) > 1 or names[0] != group:
            for name in sorted(names, key=lambda n: -stages.cpu[n]):
                part = stages.cpu[name] / count / 1000
                print(f"  {name:56} {part:8.1f} {'':5} {stages.wall[name] / count / 1000:8.1f}")
    print(f"{'total':58} {total_cpu:8.1f} {100:5.1f} {total_wall:8.1f}")
    summary["total"] = {"cpu_us": round(total_cpu, 1), "wall_us": round(total_wall, 1)}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--key", required=True, help="the service's API key")
    parser.add_argument("--body", required=True, help="the JSON body to submit")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--new-keys", action="store_true", help="a new Idempotency-Key each")
    parser.add_argument("--cprofile", type=Path, help="also write a cProfile of the measured run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    stages = Stages()
    # Wrap before the handler is built (it binds its methods when it loads the middleware).
    missing = instrument(stages)
    if missing:
        print("WARNING: stages not found (moved?): " + ", ".join(missing))
    from config.wsgi import application

    body = args.body.encode()
    tag = str(time.time_ns())
    run(application, stages, body, args.key, args.warmup, args.new_keys, tag + "w")
    stages.reset()
    profile = cProfile.Profile() if args.cprofile else None
    if profile is not None:
        profile.enable()
    run(application, stages, body, args.key, args.requests, args.new_keys, tag)
    if profile is not None:
        profile.disable()
        profile.dump_stats(args.cprofile)
    title = "with a new Idempotency-Key each" if args.new_keys else "without an Idempotency-Key"
    summary = report(stages, args.requests, title)
    if args.json:
        print("STAGESJSON " + json.dumps(summary))


if __name__ == "__main__":
    main()
