from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from approvals import views

app_name = "approvals"

urlpatterns = [
    path("", views.queue, name="queue"),
    path("history/", views.history, name="history"),
    path("proposals/<uuid:proposal_id>/", views.proposal_detail, name="proposal"),
    path("proposals/<uuid:proposal_id>/claim/", views.proposal_claim, name="claim"),
    path("proposals/<uuid:proposal_id>/release/", views.proposal_release, name="release"),
    path("proposals/<uuid:proposal_id>/decide/", views.proposal_decide, name="decide"),
    path("proposals/<uuid:proposal_id>/comment/", views.proposal_comment, name="comment"),
    path("proposals/<uuid:proposal_id>/extend/", views.proposal_extend, name="extend"),
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="approvals/login.html", redirect_authenticated_user=True
        ),
        name="login",
    ),
    path("logout/", views.logout, name="logout"),
]
