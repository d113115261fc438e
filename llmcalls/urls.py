from __future__ import annotations

from django.urls import path

from llmcalls import proxy, views

app_name = "llmcalls"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("calls/<uuid:call_id>/", views.call_detail, name="call"),
    path("v1/chat/completions", proxy.chat_completions, name="proxy-chat"),
    path("v1/models", proxy.models, name="proxy-models"),
]
