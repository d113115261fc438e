from __future__ import annotations

from django.urls import path

from notify import views

app_name = "notify"

urlpatterns = [
    path("slack/interactions", views.slack_interactions, name="slack-interactions"),
    path("notifications/", views.preferences, name="preferences"),
]
