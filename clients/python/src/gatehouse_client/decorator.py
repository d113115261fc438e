"""`@requires_approval`: a function that runs only once Gatehouse approves its arguments.

    @requires_approval(gh, action_type="refund.issue",
                       summary=lambda a: f"Refund {a['amount']} on {a['order_id']}",
                       confidence=0.8)
    def issue_refund(order_id: str, amount: float, currency: str = "EUR") -> str: ...

Each call:
1. binds the arguments to the signature (defaults filled in) — that object is the payload;
2. proposes it (one Idempotency-Key per call, or the one `idempotency_key` derives);
3. waits for the decision, at most `wait_timeout` seconds;
4. approved: binds the **approved** payload (a reviewer's edit applies) back to the signature,
   checks that what it is about to run hashes to the hash Gatehouse approved, and runs the
   function once with it; for executor `none` it then reports executed / failed;
5. rejected → `Rejected` (the reviewer's or the rule's reason); expired → `Expired`; cancelled →
   `Cancelled`; no decision in time → the proposal is withdrawn and `ApprovalTimeout` raised
   (if it was decided in that instant, that decision applies). The function runs on no other path.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypedDict, TypeVar, Unpack, cast

from gatehouse_client.client import AsyncGatehouse, Gatehouse, ResultStatus
from gatehouse_client.errors import (
    AlreadyExecuted,
    ApprovalTimeout,
    Cancelled,
    Conflict,
    Expired,
    NotApproved,
    PayloadMismatch,
    Rejected,
)
from gatehouse_client.hashing import canonical_json, payload_hash
from gatehouse_client.models import Proposal

log = logging.getLogger("gatehouse_client")

F = TypeVar("F", bound=Callable[..., Any])
Payload = dict[str, Any]
Derived = Callable[[Payload], Any]

_current: contextvars.ContextVar[Proposal | None] = contextvars.ContextVar(
    "gatehouse_proposal", default=None
)


def current_proposal() -> Proposal | None:
    """Inside a gated function: the approved proposal it runs for (its `id` is for your logs)."""
    return _current.get()


def _value(option: Any, payload: Payload) -> Any:
    return option(payload) if callable(option) else option


class GateOptions(TypedDict, total=False):
    """What else a proposal says, each a value or a function of the payload where marked."""

    rationale: str | Derived | None
    model: str | None
    prompt_version: str | None
    feature: str | None
    external_id: str | Derived | None
    metadata: Payload | Derived | None


@dataclass(frozen=True)
class Gate:
    """What to propose for a call and how to judge the answer; shared by the decorator and the
    adapters (which supply payloads of their own)."""

    action_type: str
    summary: str | Derived
    confidence: float | Derived
    rationale: str | Derived | None = None
    model: str | None = None
    prompt_version: str | None = None
    feature: str | None = None
    external_id: str | Derived | None = None
    metadata: Payload | Derived | None = None
    wait_timeout: float = 300.0
    cancel_on_timeout: bool = True

    def propose_kwargs(self, payload: Payload, idempotency_key: str | None) -> dict[str, Any]:
        return {
            "action_type": self.action_type,
            "payload": payload,
            "confidence": float(_value(self.confidence, payload)),
            "summary": str(_value(self.summary, payload))[:200],
            "rationale": _value(self.rationale, payload),
            "model": self.model,
            "prompt_version": self.prompt_version,
            "feature": self.feature,
            "external_id": _value(self.external_id, payload),
            "metadata": _value(self.metadata, payload),
            "idempotency_key": idempotency_key,
        }


def call_key(*parts: str) -> str:
    """An Idempotency-Key for one tool call; hashed when it would pass the server's 255."""
    key = ":".join(parts)
    if len(key) <= 255 and key.isprintable():
        return key
    return f"{parts[0]}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def as_payload(value: Payload) -> Payload:
    """The JSON the server will see (and hash): tuples become lists, and so on. Refuses what JSON
    cannot carry, before anything is proposed."""
    try:
        result = json.loads(canonical_json(value))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the arguments must be JSON values to be proposed: {exc}") from None
    return cast(Payload, result)


def approved_payload(proposal: Proposal, *, proposed: Payload) -> Payload:
    """The payload to run, once its proposal is decided; raises unless it was approved.

    The payload returned hashes to the hash Gatehouse reports for the approved proposal, and
    without an edit it is exactly what was proposed.
    """
    if proposal.is_approved:
        approved = proposal.approved_payload
        if proposal.payload_hash is None:
            raise PayloadMismatch(
                "Gatehouse did not say which payload it approved; not running.", proposal=proposal
            )
        if (
            proposal.state in {"executed", "failed"}
            and (proposal.execution or {}).get("executor") == "none"
        ):
            # Found again through its idempotency key: this call already ran and reported.
            raise AlreadyExecuted(
                f"Proposal {proposal.id} already ran ({proposal.state}); not running again.",
                proposal=proposal,
            )
        if payload_hash(approved) != proposal.payload_hash:
            raise PayloadMismatch(
                "The approved payload does not hash to what Gatehouse approved; not running.",
                proposal=proposal,
            )
        if proposal.final_payload is None and payload_hash(proposal.payload) != payload_hash(
            proposed
        ):
            raise PayloadMismatch(
                "Gatehouse approved a payload other than the one proposed; not running.",
                proposal=proposal,
            )
        return approved
    if proposal.state == "rejected":
        raise Rejected(proposal.reason or "rejected", proposal=proposal)
    if proposal.state == "expired":
        raise Expired(
            proposal.reason or "No decision before the review expired.", proposal=proposal
        )
    if proposal.state == "cancelled":
        raise Cancelled(proposal.reason or "The proposal was withdrawn.", proposal=proposal)
    raise ApprovalTimeout(f"No decision yet (state {proposal.state}).", proposal=proposal)


def rejection_text(exc: NotApproved) -> str:
    """What a model reads as a tool's result when the call did not run (the adapters)."""
    if isinstance(exc, AlreadyExecuted):
        return f"Already done earlier: {exc}"
    if isinstance(exc, Rejected):
        return f"Not done: Gatehouse rejected this action. Reason: {exc.reason}"
    return f"Not done: {exc}"


def decide(
    client: Gatehouse, proposal: Proposal, gate: Gate, proposed: Payload
) -> tuple[Proposal, Payload]:
    """Wait (bounded) for `proposal`'s decision: the decided proposal and the approved payload,
    or raise."""
    if proposal.replayed:
        proposal = client.get(proposal.id)
    if not proposal.is_decided:
        proposal = client.wait(proposal.id, timeout=gate.wait_timeout)
    if not proposal.is_decided and gate.cancel_on_timeout:
        try:
            withdrawn = client.cancel(proposal.id, _stopped_waiting(gate))
        except Conflict:
            proposal = client.get(proposal.id)  # decided in the meantime: that decision applies
        else:
            raise ApprovalTimeout(_stopped_waiting(gate), proposal=withdrawn)
    return proposal, approved_payload(proposal, proposed=proposed)


async def adecide(
    client: AsyncGatehouse, proposal: Proposal, gate: Gate, proposed: Payload
) -> tuple[Proposal, Payload]:
    if proposal.replayed:
        proposal = await client.get(proposal.id)
    if not proposal.is_decided:
        proposal = await client.wait(proposal.id, timeout=gate.wait_timeout)
    if not proposal.is_decided and gate.cancel_on_timeout:
        try:
            withdrawn = await client.cancel(proposal.id, _stopped_waiting(gate))
        except Conflict:
            proposal = await client.get(proposal.id)
        else:
            raise ApprovalTimeout(_stopped_waiting(gate), proposal=withdrawn)
    return proposal, approved_payload(proposal, proposed=proposed)


def _stopped_waiting(gate: Gate) -> str:
    return f"The caller stopped waiting for a decision after {gate.wait_timeout:g} s."


class _Binder:
    """Turns a call into a payload and an approved payload back into a call."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.signature = inspect.signature(fn)
        for p in self.signature.parameters.values():
            if p.kind in {p.VAR_POSITIONAL, p.VAR_KEYWORD}:
                raise TypeError(
                    f"@requires_approval needs named parameters; {fn.__qualname__} takes "
                    f"*{p.name}: its payload would have no stable shape"
                )

    def payload(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Payload:
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return as_payload(dict(bound.arguments))

    def call_args(self, approved: Payload, proposal: Proposal) -> tuple[list[Any], dict[str, Any]]:
        names = set(self.signature.parameters)
        if set(approved) - names:
            raise PayloadMismatch(
                f"The approved payload has fields the function does not take: "
                f"{sorted(set(approved) - names)}; not running.",
                proposal=proposal,
            )
        positional, keywords = [], {}
        for name, param in self.signature.parameters.items():
            if name not in approved:
                if param.default is param.empty:
                    raise PayloadMismatch(
                        f"The approved payload lacks {name!r}; not running.", proposal=proposal
                    )
                continue
            if param.kind is param.POSITIONAL_ONLY:
                positional.append(approved[name])
            else:
                keywords[name] = approved[name]
        bound = self.signature.bind(*positional, **keywords)
        bound.apply_defaults()
        # The binding check: what is about to run is what was approved, byte for byte.
        if payload_hash(dict(bound.arguments)) != proposal.payload_hash:
            raise PayloadMismatch(
                "The call about to run does not hash to the approved payload; not running.",
                proposal=proposal,
            )
        return positional, keywords


def requires_approval(
    client: Gatehouse | AsyncGatehouse,
    *,
    action_type: str,
    summary: str | Derived,
    confidence: float | Derived,
    idempotency_key: Callable[[Payload], str] | None = None,
    wait_timeout: float = 300.0,
    cancel_on_timeout: bool = True,
    report_result: bool = True,
    on_proposal: Callable[[Proposal], None] | None = None,
    **details: Unpack[GateOptions],
) -> Callable[[F], F]:
    """Gate a function (sync or async) behind a Gatehouse decision; see the module docstring.

    `summary`, `confidence` and the `details` (`rationale`, `model`, `prompt_version`, `feature`,
    `external_id`, `metadata`) go into the proposal; `summary`, `confidence`, `rationale`,
    `external_id` and `metadata` may be callables of the payload (the arguments by name).
    `idempotency_key(payload)` makes a re-run of the same logical call find its earlier proposal
    instead of raising a new one. `on_proposal` hears the proposal as soon as it exists (for
    logs); every exception carries it as `.proposal`. An async function may use either client;
    a sync function needs `Gatehouse`.
    """
    gate = Gate(
        action_type=action_type,
        summary=summary,
        confidence=confidence,
        wait_timeout=wait_timeout,
        cancel_on_timeout=cancel_on_timeout,
        **details,
    )

    def decorate(fn: F) -> F:
        binder = _Binder(fn)

        def start(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Payload, dict[str, Any]]:
            payload = binder.payload(args, kwargs)
            key = idempotency_key(payload) if idempotency_key is not None else None
            return payload, gate.propose_kwargs(payload, key)

        def heard(proposal: Proposal) -> None:
            log.info("proposal %s for %s: %s", proposal.id, action_type, proposal.state)
            if on_proposal is not None:
                on_proposal(proposal)

        if inspect.iscoroutinefunction(fn):
            if isinstance(client, AsyncGatehouse):
                aclient = client
            else:
                aclient = None
                sync_client = client

            async def run_async(*args: Any, **kwargs: Any) -> Any:
                payload, propose = start(args, kwargs)
                if aclient is not None:
                    proposal = await aclient.propose(**propose)
                    heard(proposal)
                    proposal, approved = await adecide(aclient, proposal, gate, payload)
                else:
                    proposal = await asyncio.to_thread(lambda: sync_client.propose(**propose))
                    heard(proposal)
                    proposal, approved = await asyncio.to_thread(
                        decide, sync_client, proposal, gate, payload
                    )
                call_args, call_kwargs = binder.call_args(approved, proposal)
                token = _current.set(proposal)
                try:
                    result = await cast(Callable[..., Awaitable[Any]], fn)(
                        *call_args, **call_kwargs
                    )
                except Exception as exc:
                    await areport(client, proposal, report_result, "failed", repr(exc))
                    raise
                finally:
                    _current.reset(token)
                await areport(client, proposal, report_result, "executed", "")
                return result

            return cast(F, functools.wraps(fn)(run_async))

        if not isinstance(client, Gatehouse):
            raise TypeError("a sync function needs the sync client (Gatehouse)")
        sync = client

        def run(*args: Any, **kwargs: Any) -> Any:
            payload, propose = start(args, kwargs)
            proposal = sync.propose(**propose)
            heard(proposal)
            proposal, approved = decide(sync, proposal, gate, payload)
            call_args, call_kwargs = binder.call_args(approved, proposal)
            token = _current.set(proposal)
            try:
                result = fn(*call_args, **call_kwargs)
            except Exception as exc:
                report(sync, proposal, report_result, "failed", repr(exc))
                raise
            finally:
                _current.reset(token)
            report(sync, proposal, report_result, "executed", "")
            return result

        return cast(F, functools.wraps(fn)(run))

    return decorate


def _reports(proposal: Proposal, enabled: bool) -> bool:
    # Only executor `none` takes results from the service; the others Gatehouse runs itself.
    return enabled and (proposal.execution or {}).get("executor") == "none"


def report(
    client: Gatehouse, proposal: Proposal, enabled: bool, status: ResultStatus, detail: str
) -> None:
    """Tell Gatehouse how running an approved proposal went, where it wants to hear it."""
    if not _reports(proposal, enabled):
        return
    try:
        client.report_result(proposal.id, status, detail)
    except Exception:  # the function ran: a lost report must not make it look as if it had not
        log.warning("could not report the result of proposal %s", proposal.id, exc_info=True)


async def areport(
    client: Gatehouse | AsyncGatehouse,
    proposal: Proposal,
    enabled: bool,
    status: ResultStatus,
    detail: str,
) -> None:
    if not _reports(proposal, enabled):
        return
    try:
        if isinstance(client, AsyncGatehouse):
            await client.report_result(proposal.id, status, detail)
        else:
            await asyncio.to_thread(client.report_result, proposal.id, status, detail)
    except Exception:
        log.warning("could not report the result of proposal %s", proposal.id, exc_info=True)
