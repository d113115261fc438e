from __future__ import annotations

from django.urls import path

from insights import views

app_name = "insights"

urlpatterns = [
    path("", views.index, name="index"),
    path("alerts/<int:alert_id>/acknowledge/", views.alert_acknowledge, name="acknowledge"),
    path("<str:key>/", views.action_type_page, name="type"),
    path("<str:key>/settings/", views.settings_save, name="settings"),
    path("<str:key>/draft-rule/", views.draft_rule, name="draft"),
    path("<str:key>/lift-brake/", views.lift_brake, name="lift"),
]
