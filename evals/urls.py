from __future__ import annotations

from django.urls import path

from evals import views

app_name = "evals"

urlpatterns = [
    path("", views.index, name="index"),
    path("sets/<slug:name>/", views.set_detail, name="set"),
    path("runs/<int:pk>/", views.run_detail, name="run"),
    path("runs/<int:pk>/compare/", views.run_compare, name="compare"),
    path("prompts/<slug:name>/", views.prompt_detail, name="prompt"),
]
