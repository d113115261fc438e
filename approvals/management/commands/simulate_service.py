"""A pretend customer-support service posting what its model proposes, through the real API.

`python manage.py simulate_service [--url http://127.0.0.1:8000] [--rate 0.5] [--count 0]`
makes up a support ticket, asks its model what to do through Gatehouse's OpenAI-compatible
proxy (`/llm/v1`, the official openai client, the service's own Gatehouse key, the ticket's
feature in `X-Gatehouse-Feature`), and submits the model's proposal with the returned
`X-Gatehouse-Call-Id` as `llm_call_id`, so every proposal links the model call behind it. The
model is the demo's simulated one (approvals/demo_model.py, served by `manage.py
simulate_provider`): refunds, customer emails and account closures, now and then a hostile text
that tries HTML, script and htmx attributes, to show that it renders inert. Its answer is
untrusted: a reply of the wrong shape is skipped, never submitted.

After `--drift-after` seconds (default 300; 0 never) the email model gets a "silent model
update": same model name and prompt version, but half its replies now use the wrong template for
the ticket, half of those stated at 95-99% confidence, so the rules auto-approve them. Each proposal's
metadata carries `sim_quality` (good | degraded) so that `manage.py simulate_reviewers` can play
reviewers who notice; insights then shows the drop, and the audit samples engage the brake.
"""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from approvals.demo_model import KINDS, SYSTEM_PROMPT, make_proposal, ticket

__all__ = ["Command", "make_proposal"]
CALL_ID_HEADER = "X-Gatehouse-Call-Id"
# What the service takes from its model's reply; anything else in it is ignored.
FROM_MODEL: dict[str, type | tuple[type, ...]] = {
    "action_type": str,
    "payload": dict,
    "summary": str,
    "rationale": str,
    "confidence": (int, float),
    "prompt_version": str,
    "feature": str,
    "metadata": dict,
    "external_id": str,
}


class Command(BaseCommand):
    help = "Post realistic (and a few hostile) proposals to the API, as a service would."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", default=settings.SITE_URL, help="Base URL of Gatehouse")
        parser.add_argument("--key", default="", help="Service API key (default: .demo-key)")
        parser.add_argument("--rate", type=float, default=0.5, help="Proposals per second")
        parser.add_argument("--count", type=int, default=0, help="Stop after N (0: run forever)")
        parser.add_argument("--hostile", type=float, default=0.05, help="Share of hostile ones")
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument(
            "--drift-after",
            type=float,
            default=300,
            help="Seconds before the silent model update that degrades emails (0: never)",
        )
        parser.add_argument(
            "--wait-ready", type=float, default=30, help="Seconds to wait for /readyz"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        key = options["key"] or self._demo_key()
        base = options["url"].rstrip("/")
        rate = options["rate"]
        if rate <= 0:
            raise CommandError("--rate must be positive")
        rng = random.Random(options["seed"])
        self._wait_ready(base, options["wait_ready"])
        import openai

        model = openai.OpenAI(base_url=f"{base}/llm/v1", api_key=key, max_retries=0, timeout=30)
        sent = 0
        started = time.monotonic()
        drift_after = options["drift_after"]
        while options["count"] == 0 or sent < options["count"]:
            degraded = drift_after > 0 and time.monotonic() - started > drift_after
            made_up = ticket(rng, hostile=rng.random() < options["hostile"], degraded=degraded)
            sent += 1
            try:
                body = self._ask_model(model, made_up)
            except (openai.OpenAIError, ValueError) as exc:
                self.stdout.write(f"model call for {made_up['ticket']} failed: {exc}")
            else:
                status, answer = self._post(base, key, body)
                state = answer.get("state", answer.get("detail", "?"))
                self.stdout.write(
                    f"{status} {body['action_type']:<14} {state:<15} {body['summary'][:70]}"
                )
            time.sleep(rng.expovariate(rate))

    def _ask_model(self, model: Any, made_up: dict[str, Any]) -> dict[str, Any]:
        """The proposal the model drafts for a ticket, with the call's id; ValueError if the
        reply is not a proposal."""
        raw = model.chat.completions.with_raw_response.create(
            model="support-model",  # the route decides the model; this name is not used
            messages=[
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": json.dumps(made_up)},
            ],
            extra_headers={"X-Gatehouse-Feature": KINDS[made_up["kind"]]},
        )
        completion = raw.parse()
        reply = json.loads(completion.choices[0].message.content or "")
        if not isinstance(reply, dict):
            raise ValueError("the model's reply is not a JSON object")
        body: dict[str, Any] = {}
        for name, kind in FROM_MODEL.items():
            if not isinstance(reply.get(name), kind):
                raise ValueError(f"the model's reply has no valid {name!r}")
            body[name] = reply[name]
        body["model"] = completion.model
        body["llm_call_id"] = raw.headers.get(CALL_ID_HEADER)
        return body

    def _demo_key(self) -> str:
        path = Path(settings.BASE_DIR) / ".demo-key"
        if not path.exists():
            raise CommandError("No --key given and no .demo-key: run `manage.py seed_demo` first.")
        return path.read_text().strip()

    def _wait_ready(self, base: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=2):  # noqa: S310 - our own URL
                    return
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise CommandError(f"{base} did not answer within {seconds:.0f} s") from None
                time.sleep(0.5)

    def _post(self, base: str, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(  # noqa: S310 - our own URL
            f"{base}/api/v1/proposals",
            data=json.dumps(body).encode(),
            method="POST",
            headers={
                "Authorization": f"Bearer {key}",
                "Content-Type": "application/json",
                "Idempotency-Key": str(uuid.uuid4()),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, json.loads(exc.read() or b"{}")
            except ValueError:
                return exc.code, {}
        except (urllib.error.URLError, OSError) as exc:
            return 0, {"detail": str(exc)}
