from __future__ import annotations

from tests.conftest import ServiceClient, refund_body


def test_a_service_submits_a_proposal_that_waits_for_review(shop: ServiceClient) -> None:
    response = shop.post_json("/api/v1/proposals", refund_body())
    assert response.status_code == 201, response.content
    assert response.json()["state"] == "pending_review"
