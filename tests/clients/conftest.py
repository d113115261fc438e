"""The Python client against the live app: uvicorn on loopback, a misbehaving proxy in front of
it, a fake tool-calling model, and a reviewer who decides from another thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import close_old_connections, connection

from approvals import services
from approvals.models import ActionType, Proposal
from tests.clients.fake_model import FakeToolModel
from tests.clients.proxy import MisbehavingProxy
from tests.live_app import any_free_port, serve


@pytest.fixture(scope="session")
def live_gatehouse() -> Iterator[str]:
    yield from serve(any_free_port())


@pytest.fixture(scope="session")
def _proxy(live_gatehouse: str) -> Iterator[MisbehavingProxy]:
    proxy = MisbehavingProxy(live_gatehouse, any_free_port()).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def proxy(_proxy: MisbehavingProxy) -> MisbehavingProxy:
    _proxy.reset()
    return _proxy


@pytest.fixture(scope="session")
def _fake_model() -> Iterator[FakeToolModel]:
    model = FakeToolModel(any_free_port()).start()
    yield model
    model.stop()


@pytest.fixture
def fake_model(_fake_model: FakeToolModel) -> FakeToolModel:
    _fake_model.reset()
    return _fake_model


@dataclass
class Shop:
    """A service allowed refunds (executor `none`), its key and the live URL."""

    url: str
    key: str
    service: Any


@pytest.fixture
def gh_shop(live_gatehouse: str, refund_type: ActionType, settings: Any) -> Shop:
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
    service, key = services.service_create(name="shop", action_type_keys=[refund_type.key])
    return Shop(url=live_gatehouse, key=key, service=service)


@pytest.fixture
def small_refunds_rule(make_rule: Callable[..., Any], refund_type: ActionType) -> Any:
    """Refunds up to 50 are approved by rule; the rest go to a reviewer."""
    return make_rule(
        "small-refunds", action_type=refund_type, when="payload.amount <= 50.0", outcome="approve"
    )


class ReviewerThread:
    """Decides the next pending proposals as a reviewer would (claim, then decide), from a thread,
    while the code under test is blocked waiting for the decision."""

    def __init__(self, reviewer: Any) -> None:
        self.reviewer = reviewer
        self.decided: list[str] = []
        self.errors: list[BaseException] = []
        self._threads: list[threading.Thread] = []

    def decide_next(
        self,
        verdict: str = "approve",
        *,
        comment: str = "",
        edit: dict[str, Any] | None = None,
        count: int = 1,
        timeout: float = 15,
    ) -> None:
        thread = threading.Thread(
            target=self._run, args=(verdict, comment, edit, count, timeout), daemon=True
        )
        thread.start()
        self._threads.append(thread)

    def _run(
        self, verdict: str, comment: str, edit: dict[str, Any] | None, count: int, timeout: float
    ) -> None:
        try:
            deadline = time.monotonic() + timeout
            done = 0
            while done < count and time.monotonic() < deadline:
                pending = (
                    Proposal.objects.filter(state=Proposal.State.PENDING_REVIEW)
                    .exclude(pk__in=self.decided)
                    .order_by("created_at")
                    .first()
                )
                if pending is None:
                    time.sleep(0.05)
                    continue
                services.claim_acquire(proposal_id=pending.pk, reviewer=self.reviewer)
                services.proposal_decide(
                    proposal=pending,
                    reviewer=self.reviewer,
                    verdict=verdict,
                    comment=comment,
                    edited_payload={**pending.payload, **edit} if edit else None,
                )
                self.decided.append(str(pending.pk))
                done += 1
        except BaseException as exc:  # surfaced by join()
            self.errors.append(exc)
        finally:
            connection.close()

    def join(self) -> None:
        for thread in self._threads:
            thread.join(timeout=20)
        if self.errors:
            raise self.errors[0]


@pytest.fixture
def reviewer_thread(reviewer: Any) -> Iterator[ReviewerThread]:
    helper = ReviewerThread(reviewer)
    yield helper
    helper.join()
    close_old_connections()
