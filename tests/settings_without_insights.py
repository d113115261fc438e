"""The project's settings with the optional insights app left out (tests/approvals/test_without_insights.py)."""

from config.settings import *  # noqa: F403
from config.settings import INSTALLED_APPS, app_contributions

INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "insights"]
DECISION_CHECKS, PAGE_PARTS = app_contributions(INSTALLED_APPS)
