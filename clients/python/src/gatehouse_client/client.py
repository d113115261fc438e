"""`Gatehouse` and `AsyncGatehouse`: the REST API of docs/api.md with retries and typed errors."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Literal

import httpx

from gatehouse_client import _retry
from gatehouse_client._retry import RetryPolicy
from gatehouse_client.errors import APIError, Conflict
from gatehouse_client.models import ActionType, Proposal

__version__ = "0.1.0"

LONG_POLL_MAX = 30.0  # the server's cap on ?wait= (LONG_POLL_MAX_SECONDS)
ResultStatus = Literal["executed", "failed"]


def _api_root(base_url: str) -> str:
    root = base_url.rstrip("/")
    return root if root.endswith("/api/v1") else f"{root}/api/v1"


def _proposal_body(
    action_type: str,
    payload: dict[str, Any],
    *,
    confidence: float,
    summary: str,
    rationale: str | None,
    model: str | None,
    prompt_version: str | None,
    feature: str | None,
    external_id: str | None,
    llm_call_id: str | None,
    metadata: dict[str, Any] | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "action_type": action_type,
        "payload": payload,
        "confidence": float(confidence),
        "summary": summary,
    }
    optional = {
        "rationale": rationale,
        "model": model,
        "prompt_version": prompt_version,
        "feature": feature,
        "external_id": external_id,
        "llm_call_id": llm_call_id,
        "metadata": metadata,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


def _settled(exc: Conflict, state: str) -> bool:
    """A 409 that says the proposal is already where we wanted it (a retry after a lost answer)."""
    return exc.code == "invalid-state" and exc.body.get("state") == state


class _Base:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.api_root = _api_root(base_url)
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "User-Agent": f"gatehouse-client-python/{__version__}",
            "Accept": "application/json",
        }

    def _url(self, path: str) -> str:
        return f"{self.api_root}{path}"

    def _timeout(self, extra: float) -> httpx.Timeout:
        return httpx.Timeout(self.timeout + extra, connect=min(self.timeout, 10.0))

    def _judge(
        self, method: str, url: str, attempt: int, outcome: httpx.Response | httpx.TransportError
    ) -> tuple[Any, httpx.Headers] | float:
        """The answer (body, headers), or how long to wait before the next attempt; raises the
        typed error when the answer is final or the attempts are used up."""
        last = attempt >= self.retry.max_attempts
        if isinstance(outcome, httpx.TransportError):
            if last:
                raise _retry.connection_failed(method, url, outcome) from outcome
            return float(self.retry.backoff(attempt))
        body, error = _retry.outcome(outcome)
        if error is None:
            return body, outcome.headers
        if last or not _retry.is_retryable(outcome.status_code, body):
            raise error
        return float(_retry.delay_for(self.retry, attempt, outcome))

    @staticmethod
    def _post_headers(idempotency_key: str | None) -> dict[str, str]:
        # One key per logical call, generated here (before the retry loop) and reused by every
        # attempt of it: a retry after a lost answer replays the first answer.
        return {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}


class Gatehouse(_Base):
    """A Gatehouse service client. Thread-safe; close it (or use `with`) when done."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout=timeout, retry=retry)
        self._http = http_client or httpx.Client()
        self._owns_http = http_client is None

    def __enter__(self) -> Gatehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        extra_timeout: float = 0.0,
    ) -> Any:
        return self._send(
            method, path, json=json, params=params, headers=headers, extra_timeout=extra_timeout
        )[0]

    def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        extra_timeout: float = 0.0,
    ) -> tuple[Any, httpx.Headers]:
        url = self._url(path)
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.request(
                    method,
                    url,
                    json=json,
                    params=params,
                    headers={**self._headers, **(headers or {})},
                    timeout=self._timeout(extra_timeout),
                )
            except httpx.TransportError as exc:
                step = self._judge(method, url, attempt, exc)
            else:
                step = self._judge(method, url, attempt, response)
            if not isinstance(step, float):
                return step
            time.sleep(step)

    def propose(
        self,
        action_type: str,
        payload: dict[str, Any],
        *,
        confidence: float,
        summary: str,
        rationale: str | None = None,
        model: str | None = None,
        prompt_version: str | None = None,
        feature: str | None = None,
        external_id: str | None = None,
        llm_call_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Proposal:
        """Submit a proposal; its `state` says whether a rule decided or a reviewer will."""
        body = _proposal_body(
            action_type,
            payload,
            confidence=confidence,
            summary=summary,
            rationale=rationale,
            model=model,
            prompt_version=prompt_version,
            feature=feature,
            external_id=external_id,
            llm_call_id=llm_call_id,
            metadata=metadata,
        )
        data, headers = self._send(
            "POST", "/proposals", json=body, headers=self._post_headers(idempotency_key)
        )
        return Proposal.from_json(data, replayed=headers.get("Idempotent-Replayed") == "true")

    def get(self, proposal_id: str) -> Proposal:
        return Proposal.from_json(self._request("GET", f"/proposals/{proposal_id}"))

    def wait(self, proposal_id: str, timeout: float = 60.0) -> Proposal:
        """Long-poll until the proposal is decided or `timeout` seconds pass; then its state."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            hold = max(0.0, min(remaining, LONG_POLL_MAX))
            data = self._request(
                "GET", f"/proposals/{proposal_id}", params={"wait": hold}, extra_timeout=hold
            )
            proposal = Proposal.from_json(data)
            if proposal.is_decided or deadline - time.monotonic() <= 0:
                return proposal

    def cancel(self, proposal_id: str, reason: str = "") -> Proposal:
        """Withdraw a pending proposal. Conflict if it was decided meanwhile."""
        try:
            data = self._request(
                "POST",
                f"/proposals/{proposal_id}/cancel",
                json={"reason": reason},
                headers=self._post_headers(None),
            )
        except Conflict as exc:
            if not _settled(exc, "cancelled"):
                raise
            return self.get(proposal_id)
        return Proposal.from_json(data)

    def report_result(
        self, proposal_id: str, status: ResultStatus = "executed", detail: str = ""
    ) -> Proposal:
        """For executor `none`: tell Gatehouse you executed the approved action (or it failed)."""
        try:
            data = self._request(
                "POST",
                f"/proposals/{proposal_id}/result",
                json={"status": status, "detail": detail[:2000]},
                headers=self._post_headers(None),
            )
        except Conflict as exc:
            if not _settled(exc, status):
                raise
            return self.get(proposal_id)
        return Proposal.from_json(data)

    def action_types(self) -> list[ActionType]:
        return [ActionType.from_json(t) for t in self._request("GET", "/action-types")]


class AsyncGatehouse(_Base):
    """The same methods as `Gatehouse`, as coroutines."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout=timeout, retry=retry)
        self._http = http_client or httpx.AsyncClient()
        self._owns_http = http_client is None

    async def __aenter__(self) -> AsyncGatehouse:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        extra_timeout: float = 0.0,
    ) -> Any:
        sent = await self._send(
            method, path, json=json, params=params, headers=headers, extra_timeout=extra_timeout
        )
        return sent[0]

    async def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        extra_timeout: float = 0.0,
    ) -> tuple[Any, httpx.Headers]:
        url = self._url(path)
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._http.request(
                    method,
                    url,
                    json=json,
                    params=params,
                    headers={**self._headers, **(headers or {})},
                    timeout=self._timeout(extra_timeout),
                )
            except httpx.TransportError as exc:
                step = self._judge(method, url, attempt, exc)
            else:
                step = self._judge(method, url, attempt, response)
            if not isinstance(step, float):
                return step
            await asyncio.sleep(step)

    async def propose(
        self,
        action_type: str,
        payload: dict[str, Any],
        *,
        confidence: float,
        summary: str,
        rationale: str | None = None,
        model: str | None = None,
        prompt_version: str | None = None,
        feature: str | None = None,
        external_id: str | None = None,
        llm_call_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Proposal:
        body = _proposal_body(
            action_type,
            payload,
            confidence=confidence,
            summary=summary,
            rationale=rationale,
            model=model,
            prompt_version=prompt_version,
            feature=feature,
            external_id=external_id,
            llm_call_id=llm_call_id,
            metadata=metadata,
        )
        data, headers = await self._send(
            "POST", "/proposals", json=body, headers=self._post_headers(idempotency_key)
        )
        return Proposal.from_json(data, replayed=headers.get("Idempotent-Replayed") == "true")

    async def get(self, proposal_id: str) -> Proposal:
        return Proposal.from_json(await self._request("GET", f"/proposals/{proposal_id}"))

    async def wait(self, proposal_id: str, timeout: float = 60.0) -> Proposal:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            hold = max(0.0, min(remaining, LONG_POLL_MAX))
            data = await self._request(
                "GET", f"/proposals/{proposal_id}", params={"wait": hold}, extra_timeout=hold
            )
            proposal = Proposal.from_json(data)
            if proposal.is_decided or deadline - time.monotonic() <= 0:
                return proposal

    async def cancel(self, proposal_id: str, reason: str = "") -> Proposal:
        try:
            data = await self._request(
                "POST",
                f"/proposals/{proposal_id}/cancel",
                json={"reason": reason},
                headers=self._post_headers(None),
            )
        except Conflict as exc:
            if not _settled(exc, "cancelled"):
                raise
            return await self.get(proposal_id)
        return Proposal.from_json(data)

    async def report_result(
        self, proposal_id: str, status: ResultStatus = "executed", detail: str = ""
    ) -> Proposal:
        try:
            data = await self._request(
                "POST",
                f"/proposals/{proposal_id}/result",
                json={"status": status, "detail": detail[:2000]},
                headers=self._post_headers(None),
            )
        except Conflict as exc:
            if not _settled(exc, status):
                raise
            return await self.get(proposal_id)
        return Proposal.from_json(data)

    async def action_types(self) -> list[ActionType]:
        return [ActionType.from_json(t) for t in await self._request("GET", "/action-types")]


__all__ = ["APIError", "AsyncGatehouse", "Gatehouse"]
