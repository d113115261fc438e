"""`python manage.py run_stack`: web, worker and beat (and any extra commands) in one terminal.

For the embedded default and development. Each child runs in its own process group; SIGINT or
SIGTERM to this command (or any child exiting) stops them all: SIGTERM to each child, then
SIGKILL to the child's whole group after a grace period. Output is prefixed with the child's name. In production run the Procfile's
processes under a supervisor instead.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO, Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

GRACE_SECONDS = 10


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None


class Command(BaseCommand):
    help = "Run the web server, a Celery worker and beat together; Ctrl-C stops them all."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
        parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
        parser.add_argument(
            "--extra",
            action="append",
            default=[],
            metavar="[NAME=]COMMAND",
            help="another command to run alongside, e.g. --extra 'simulator=python manage.py simulate'",
        )
        parser.add_argument("--no-beat", action="store_true", help="run web and worker only")

    def handle(self, *args: Any, **options: Any) -> None:
        children = self._children(options)
        stopping = threading.Event()

        def stop(signum: int, frame: Any) -> None:
            stopping.set()

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        broker = settings.CELERY_BROKER_URL.split("://")[0]
        self.stdout.write(
            f"Gatehouse: web on http://{options['host']}:{options['port']}/, "
            f"{options['concurrency']} worker processes, {'no beat' if options['no_beat'] else 'beat'}, "
            f"broker {broker}. Ctrl-C stops everything."
        )
        _share_metrics()
        for child in children:
            child.proc = subprocess.Popen(
                child.argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            threading.Thread(
                target=self._relay, args=(child.name, child.proc.stdout), daemon=True
            ).start()

        exited: Child | None = None
        while not stopping.is_set() and exited is None:
            exited = next((c for c in children if c.proc and c.proc.poll() is not None), None)
            stopping.wait(0.2)
        if exited is not None:
            self.stderr.write(f"{exited.name} exited with {exited.proc.returncode}; stopping.")  # type: ignore[union-attr]
        self._stop_all(children)
        if exited is not None:
            raise CommandError(f"{exited.name} stopped unexpectedly", returncode=1)

    def _children(self, options: dict[str, Any]) -> list[Child]:
        python = sys.executable
        celery = [python, "-m", "celery", "-A", "config"]
        children = [
            Child(
                "web",
                [
                    python, "-m", "uvicorn", "config.asgi:application",
                    "--host", options["host"], "--port", str(options["port"]),
                    "--log-level", "warning",
                ],
            ),
            Child(
                "worker",
                [
                    *celery, "worker", "--concurrency", str(options["concurrency"]),
                    "--without-gossip", "--without-mingle", "--without-heartbeat",
                    "--loglevel", "INFO",
                ],
            ),
        ]  # fmt: skip
        if not options["no_beat"]:
            children.append(
                Child(
                    "beat",
                    [
                        *celery, "beat", "--loglevel", "WARNING",
                        "--schedule", str(settings.CELERY_BEAT_SCHEDULE_FILENAME),
                    ],
                )
            )  # fmt: skip
        for index, extra in enumerate(options["extra"], start=1):
            name, sep, command = extra.partition("=")
            if not sep or " " in name or not name:
                name, command = f"extra{index}", extra
            argv = shlex.split(command)
            if not argv:
                raise CommandError(f"--extra {extra!r}: empty command")
            children.append(Child(name, argv))
        return children

    def _relay(self, name: str, stream: IO[bytes] | None) -> None:
        if stream is None:
            return
        width = 8
        for line in iter(stream.readline, b""):
            text = line.decode(errors="replace").rstrip()
            self.stdout.write(f"{name:<{width}}| {text}")
            self.stdout.flush()

    def _stop_all(self, children: list[Child]) -> None:
        running = [c for c in children if c.proc and c.proc.poll() is None]
        for child in running:
            # To the leader only: a Celery worker stops its own pool children in order.
            assert child.proc is not None
            child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + GRACE_SECONDS
        for child in running:
            assert child.proc is not None
            try:
                child.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                self.stderr.write(f"{child.name} did not stop in {GRACE_SECONDS}s; killing it.")
                _signal_group(child, signal.SIGKILL)
                child.proc.wait()
        self.stdout.write("All stopped.")


def _share_metrics() -> None:
    """With METRICS_TOKEN set, the children count into one fresh PROMETHEUS_MULTIPROC_DIR
    (BROKER_DIR/metrics unless the variable names another), so /metrics adds them all up."""
    if not settings.METRICS_TOKEN or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    folder = settings.BROKER_DIR / "metrics"
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):  # counters of an earlier run would be added in
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)


def _signal_group(child: Child, signum: int) -> None:
    assert child.proc is not None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.proc.pid, signum)
