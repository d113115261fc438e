"""The queue page's render cost (issue 16 item 4), in-process: the Django test client on growth.py's
small fill (GROWTH_SCALE=0.01: 1,000 pending proposals over three types), a logged-in reviewer.

Prints, over `--requests` rounds, the p50/p95 of
  - the floor: the page's selector alone (`selectors.queue_for_reviewer`, the 50 rows and their
    types, claims and reviews: what the page cannot do without),
  - the rows alone: `approvals/_queue_rows.html` rendered from that page (per row: / 50),
  - the whole page: GET / through the middleware, session and layout,
and the page's ratio to the floor.

    GROWTH_SCALE=0.01 .venv/bin/python bench/growth.py --database gh_rows_small --fill-only
    .venv/bin/python bench/queue_render.py --database gh_rows_small
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import bench_env
from growth import loadavg, p95, setup_django, timed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", default="gh_growth_small")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/4")
    args = parser.parse_args()
    print(f"load before: {loadavg()}")
    setup_django(bench_env(args.database, REDIS_URL=args.redis_url))

    from django.contrib.auth.models import User
    from django.template.loader import render_to_string
    from django.test import Client

    from approvals import selectors

    user = User.objects.get(username="reviewer1")
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    filters = selectors.QueueFilters()
    page = selectors.queue_for_reviewer(user=user, filters=filters)
    assert len(page.rows) == 50, len(page.rows)
    assert client.get("/").status_code == 200

    def select() -> None:
        selectors.queue_for_reviewer(user=user, filters=filters)

    def rows() -> None:
        render_to_string("approvals/_queue_rows.html", {"page": page, "filters": filters})

    def whole() -> None:
        client.get("/")

    figures = {}
    for name, fn in (("floor: selector", select), ("rows (50)", rows), ("page GET /", whole)):
        samples = timed(fn, args.requests)
        figures[name] = (statistics.median(samples), p95(samples))
        print(f"  {name:18} p50 {figures[name][0]:6.2f} ms  p95 {figures[name][1]:6.2f} ms")
    print(f"  a row: {figures['rows (50)'][0] / 50 * 1000:.0f} µs (p50 / 50)")
    floor, page_ms = figures["floor: selector"], figures["page GET /"]
    print(f"  page / floor: p50 {page_ms[0] / floor[0]:.2f}x  p95 {page_ms[1] / floor[1]:.2f}x")
    print(f"load after: {loadavg()}")


if __name__ == "__main__":
    main()
