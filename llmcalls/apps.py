from __future__ import annotations

from django.apps import AppConfig


class LlmcallsConfig(AppConfig):
    name = "llmcalls"
    verbose_name = "Model calls"

    def ready(self) -> None:
        # Registers the llm_providers, llm_routes and llm_grants sections of `manage.py apply`,
        # and `create_service --llm-features`.
        from approvals.services import SERVICE_GRANTS
        from llmcalls import configspec  # noqa: F401
        from llmcalls.services import feature_grants_for_new_service

        SERVICE_GRANTS["llm-features"] = (
            "comma-separated features the service may call through the model proxy (/llm/v1)",
            feature_grants_for_new_service,
        )
        # Reviewers' verdicts on proposals linked to a model call approve or evict the semantic
        # cache's entries (llmcalls/semcache.py); approvals does not know llmcalls is listening.
        from approvals.events import proposal_committed
        from llmcalls.semcache import on_proposal_committed

        proposal_committed.connect(on_proposal_committed, dispatch_uid="llmcalls.semcache")
