"""The honest floor: a bare Django project, generated into a temporary directory.

One model, one function view that parses the JSON body and inserts one row, the middleware
`django-admin startproject` writes and nothing else; the same PostgreSQL server and the same
pooled psycopg connections as Gatehouse (DB_POOL_MAX). Nothing here is committed as an app: the
benchmark writes these files, migrates (`--run-syncdb`), serves and deletes them.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

SETTINGS = """\
import os

SECRET_KEY = "bare-floor-" + "x" * 40
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "floorapp",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "floorproj.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ["BARE_DATABASE"],
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": "5432",
        "OPTIONS": {"pool": {"min_size": 2, "max_size": int(os.environ.get("DB_POOL_MAX", "16"))}},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
"""

URLS = """\
import json

from django.http import HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from floorapp.models import Row


@csrf_exempt
def submit(request):
    if request.method != "POST":
        return HttpResponse("ok")
    row = Row.objects.create(data=json.loads(request.body))
    return JsonResponse({"id": row.pk}, status=201)


urlpatterns = [path("submit", submit)]
"""

MODELS = """\
from django.db import models


class Row(models.Model):
    data = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
"""

ENTRIES = {
    "wsgi.py": "import os\nfrom django.core.wsgi import get_wsgi_application\n"
    'os.environ.setdefault("DJANGO_SETTINGS_MODULE", "floorproj.settings")\n'
    "application = get_wsgi_application()\n",
    "asgi.py": "import os\nfrom django.core.asgi import get_asgi_application\n"
    'os.environ.setdefault("DJANGO_SETTINGS_MODULE", "floorproj.settings")\n'
    "application = get_asgi_application()\n",
}


@contextlib.contextmanager
def bare_project(env: dict[str, str], database: str) -> Iterator[tuple[Path, dict[str, str]]]:
    """The project in a temporary directory, migrated into `database` (already created);
    yields the directory (the servers' cwd) and the environment to serve it with."""
    with tempfile.TemporaryDirectory(prefix="bare-django-") as tmp:
        root = Path(tmp)
        files = {
            "floorproj/__init__.py": "",
            "floorproj/settings.py": SETTINGS,
            "floorproj/urls.py": URLS,
            **{f"floorproj/{name}": text for name, text in ENTRIES.items()},
            "floorapp/__init__.py": "",
            "floorapp/models.py": MODELS,
        }
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        bare_env = {
            **env,
            "BARE_DATABASE": database,
            "DJANGO_SETTINGS_MODULE": "floorproj.settings",
            "PYTHONPATH": str(root),
        }
        subprocess.run(
            [sys.executable, "-m", "django", "migrate", "--run-syncdb", "-v", "0"],
            cwd=root,
            env=bare_env,
            check=True,
            timeout=120,
        )
        yield root, bare_env
