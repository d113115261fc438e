from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from evals import services
from evals.models import EvalResult, EvalRun, EvalSet

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(db: None) -> Client:
    """Staff allowed to view eval sets (being staff alone is not enough)."""
    user = User.objects.create_user("sam", password="pw-sam-123456", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_evalset"))
    client = Client()
    client.force_login(user)
    return client


def test_staff_without_the_permission_reads_no_eval(runs: tuple[EvalRun, EvalRun]) -> None:
    # Eval cases are harvested from every team's proposals and prompts: staff status is no pass.
    client = Client()
    client.force_login(User.objects.create_user("stan", is_staff=True))
    for path in ("/evals/", "/evals/sets/refunds/", f"/evals/runs/{runs[1].pk}/"):
        assert client.get(path).status_code == 403, path


def test_a_view_only_user_cannot_seal_a_holdout(refund_set: EvalSet) -> None:
    viewer = User.objects.create_user("vic", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_evalset"))
    client = Client()
    client.force_login(viewer)

    client.post(
        "/admin/evals/evalset/",
        {"action": "seal_holdout", "_selected_action": [refund_set.pk]},
    )

    refund_set.refresh_from_db()
    assert not refund_set.is_sealed


def test_the_run_page_links_a_call_only_for_who_may_read_it(
    staff: Client, runs: tuple[EvalRun, EvalRun]
) -> None:
    from llmcalls.models import LLMCall

    call = LLMCall.objects.create(feature="evals:refunds", status="ok")
    EvalResult.objects.filter(run=runs[1]).update(llm_call=call)

    html = staff.get(f"/evals/runs/{runs[1].pk}/").content.decode()
    assert f"/llm/calls/{call.id}/" not in html
    User.objects.get(username="sam").user_permissions.add(
        Permission.objects.get(codename="view_llmcall")
    )
    html = staff.get(f"/evals/runs/{runs[1].pk}/").content.decode()
    assert f"/llm/calls/{call.id}/" in html


@pytest.fixture
def runs(refund_set: EvalSet) -> tuple[EvalRun, EvalRun]:
    return finished_runs(refund_set)


def finished_runs(refund_set: EvalSet) -> tuple[EvalRun, EvalRun]:
    """Two finished runs on stored results (no model needed): case 1 flips right→wrong and
    carries model output that tries to inject markup."""
    v1 = services.prompt_resolve(ref="refunds@1")
    v2 = services.prompt_resolve(ref="refunds@2")
    cases = list(refund_set.cases.filter(split="dev").order_by("id"))
    flipped = {c.pk for c in cases if "damaged" in c.tags}
    flipped = set(sorted(flipped)[:7])
    made = []
    for version in (v1, v2):
        run = EvalRun.objects.create(
            eval_set=refund_set, prompt_version=version, route="evals-large", scorer="label"
        )
        EvalResult.objects.bulk_create(
            EvalResult(
                run=run,
                case=case,
                passed=not (version == v2 and case.pk in flipped) and index != 47,
                output='<script>alert("x")</script>{"eligible": true}',
                latency_ms=10.0 + index,
            )
            for index, case in enumerate(cases)
        )
        made.append(services.run_finish(run=run))
    made[1].baseline = made[0]
    made[1].save()
    return made[0], made[1]


def test_anonymous_users_are_sent_to_log_in_and_others_refused(
    runs: tuple[EvalRun, EvalRun],
) -> None:
    paths = [
        "/evals/",
        "/evals/sets/refunds/",
        f"/evals/runs/{runs[1].pk}/",
        f"/evals/runs/{runs[1].pk}/compare/",
        "/evals/prompts/refunds/",
    ]
    anonymous = Client()
    outsider = Client()
    outsider.force_login(User.objects.create_user("olga", password="pw-olga-123456"))
    # staff holding another permission only (issue 12): eval cases carry customer data
    narrow_staff = User.objects.create_user("sid", password="pw-sid-1234567", is_staff=True)
    narrow_staff.user_permissions.add(Permission.objects.get(codename="change_typesettings"))
    staff_only = Client()
    staff_only.force_login(narrow_staff)
    for path in paths:
        assert anonymous.get(path).status_code == 302
        assert outsider.get(path).status_code == 403
        assert staff_only.get(path).status_code == 403
    viewer = User.objects.create_user("vic", password="pw-vic-123456")
    viewer.user_permissions.add(Permission.objects.get(codename="view_evalset"))
    allowed = Client()
    allowed.force_login(viewer)
    assert allowed.get("/evals/").status_code == 200


def _no_inline_script(html: str) -> None:
    for tag in re.findall(r"<script[^>]*>", html):
        assert "src=" in tag or 'type="application/json"' in tag, tag


def test_index_set_and_run_pages(staff: Client, runs: tuple[EvalRun, EvalRun]) -> None:
    index = staff.get("/evals/")
    assert index.status_code == 200
    html = index.content.decode()
    assert "refunds" in html and f"#{runs[1].pk}" in html
    _no_inline_script(html)

    page = staff.get("/evals/sets/refunds/")
    html = page.content.decode()
    assert page.status_code == 200 and "48 dev, 12 holdout" in html
    assert html.count('id="case-') == 60

    run_page = staff.get(f"/evals/runs/{runs[1].pk}/")
    html = run_page.content.decode()
    assert run_page.status_code == 200
    assert "<script>alert" not in html and "&lt;script&gt;alert" in html
    assert "95% CI" in html and "damaged" in html
    _no_inline_script(html)

    assert staff.get("/evals/runs/999999/").status_code == 404
    assert staff.get("/evals/sets/nope/").status_code == 404
    assert staff.post("/evals/").status_code == 405


def test_the_comparison_lists_flips_and_flags_the_regressed_tag(
    staff: Client, runs: tuple[EvalRun, EvalRun]
) -> None:
    base, run = runs
    response = staff.get(f"/evals/runs/{run.pk}/compare/")
    assert response.status_code == 200
    html = response.content.decode()
    comparison = response.context["comparison"]
    damaged = next(t for t in comparison.tags if t.tag == "damaged")
    assert (damaged.right_to_wrong, damaged.wrong_to_right) == (7, 0)
    assert damaged.regression and "Significant regression" in html
    assert html.count("right→wrong</td>") == 7
    assert "0.0156" in html  # 2 / 2**7
    assert "&lt;script&gt;" in html and "<script>alert" not in html

    lenient = staff.get(f"/evals/runs/{run.pk}/compare/?baseline={base.pk}&p=0.01")
    assert "No significant regression" in lenient.content.decode()
    assert staff.get(f"/evals/runs/{base.pk}/compare/").status_code == 404  # no baseline


def test_a_sealed_holdout_shows_aggregates_only(staff: Client, refund_set: EvalSet) -> None:
    version = services.prompt_resolve(ref="refunds@1")
    holdout = list(refund_set.cases.filter(split="holdout"))
    made = []
    for flip in (False, True):
        run = EvalRun.objects.create(
            eval_set=refund_set, prompt_version=version, route="r", split="holdout", scorer="label"
        )
        EvalResult.objects.bulk_create(
            EvalResult(
                run=run, case=c, passed=not (flip and i == 0), output=f"secret-output-{c.pk}"
            )
            for i, c in enumerate(holdout)
        )
        made.append(services.run_finish(run=run))
    services.holdout_seal(eval_set=refund_set)

    set_page = staff.get("/evals/sets/refunds/").content.decode()
    assert set_page.count('id="case-') == 48 and "ev-sealed" in set_page
    held_id = holdout[0].pk
    assert f'id="case-{held_id}"' not in set_page

    run_page = staff.get(f"/evals/runs/{made[1].pk}/").content.decode()
    assert "secret-output" not in run_page and "not shown case by case" in run_page
    assert "total" in run_page  # aggregates are there

    compare = staff.get(f"/evals/runs/{made[1].pk}/compare/?baseline={made[0].pk}").content.decode()
    assert (
        "1 right→wrong" in compare
        and "secret-output" not in compare
        and "cases are not listed" in compare
    )


def test_the_prompt_page_feeds_the_chart_through_json_script(
    staff: Client, runs: tuple[EvalRun, EvalRun]
) -> None:
    response = staff.get("/evals/prompts/refunds/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="ev-accuracy-data" type="application/json"' in html
    assert "/static/vendor/chartjs/chart.umd" in html and "/static/evals/prompt_chart" in html
    _no_inline_script(html)
    series = response.context["chart"]["series"]
    assert [s["name"] for s in series] == [
        "refunds dev · v1 on evals-large",
        "refunds dev · v2 on evals-large",
    ]
    point = series[0]["points"][0]
    assert point["run"] == runs[0].pk and point["low"] < point["y"] < point["high"]


def test_admin_hides_and_refuses_sealed_holdout_cases(refund_set: EvalSet) -> None:
    admin = Client()
    admin.force_login(User.objects.create_superuser("root", "root@example.com", "pw-root-123456"))
    held = refund_set.cases.filter(split="holdout").first()
    dev = refund_set.cases.filter(split="dev").first()
    assert held is not None and dev is not None
    assert admin.get(f"/admin/evals/evalcase/{held.pk}/change/").status_code == 200
    services.holdout_seal(eval_set=refund_set)

    listing = admin.get("/admin/evals/evalcase/?all=").content.decode()
    assert f"/admin/evals/evalcase/{dev.pk}/change/" in listing
    assert f"/admin/evals/evalcase/{held.pk}/change/" not in listing
    response = admin.get(f"/admin/evals/evalcase/{held.pk}/change/")
    assert response.status_code == 302  # "does not exist" → back to the list
    posted = admin.post(
        f"/admin/evals/evalcase/{held.pk}/change/",
        {
            "eval_set": refund_set.pk,
            "split": "holdout",
            "tags": "[]",
            "input": "{}",
            "ideal": '"tuned"',
        },
    )
    assert posted.status_code == 302
    held.refresh_from_db()
    assert held.ideal != "tuned"
    assert (
        admin.post(f"/admin/evals/evalcase/{held.pk}/delete/", {"post": "yes"}).status_code == 302
    )
    assert refund_set.cases.filter(pk=held.pk).exists()


def test_admin_prompt_versions_are_add_only(refund_set: EvalSet) -> None:
    admin = Client()
    admin.force_login(User.objects.create_superuser("root", "root@example.com", "pw-root-123456"))
    version = services.prompt_resolve(ref="refunds@1")
    page = admin.get(f"/admin/evals/promptversion/{version.pk}/change/")
    assert page.status_code == 200 and 'name="template"' not in page.content.decode()
    admin.post(
        f"/admin/evals/promptversion/{version.pk}/change/",
        {"prompt": version.prompt_id, "template": '"changed"', "route": "x", "params": "{}"},
    )
    version.refresh_from_db()
    assert version.template[0]["content"] != "changed"

    added = admin.post(
        "/admin/evals/promptversion/add/",
        {
            "prompt": version.prompt_id,
            "template": '"Hello {{name}}"',
            "route": "evals-small",
            "params": "{}",
            "move_labels": "canary",
        },
    )
    assert added.status_code == 302, added.content.decode()[:2000]
    assert services.prompt_resolve(ref="refunds@canary").version == 3


def test_admin_adds_and_edits_cases_through_the_services(refund_set: EvalSet) -> None:
    admin = Client()
    admin.force_login(User.objects.create_superuser("root", "root@example.com", "pw-root-123456"))
    form = {
        "eval_set": refund_set.pk,
        "split": "dev",
        "tags": '["new"]',
        "input": '{"q": 1}',
        "ideal": '"yes"',
    }
    assert admin.post("/admin/evals/evalcase/add/", form).status_code == 302
    case = refund_set.cases.get(tags=["new"])
    assert case.fingerprint == services.case_fingerprint(input={"q": 1}, ideal="yes")

    duplicate = admin.post("/admin/evals/evalcase/add/", form)
    assert (
        duplicate.status_code == 200
        and "The set has this case already." in duplicate.content.decode()
    )
    bad = admin.post("/admin/evals/evalcase/add/", {**form, "input": '"text"'})
    assert bad.status_code == 200 and "template variables" in bad.content.decode()

    edited = admin.post(f"/admin/evals/evalcase/{case.pk}/change/", {**form, "ideal": '"no"'})
    assert edited.status_code == 302
    case.refresh_from_db()
    assert case.ideal == "no"
    assert case.fingerprint == services.case_fingerprint(input={"q": 1}, ideal="no")

    services.holdout_seal(eval_set=refund_set)
    into_holdout = admin.post(
        f"/admin/evals/evalcase/{case.pk}/change/", {**form, "split": "holdout"}
    )
    assert into_holdout.status_code == 200 and "sealed" in into_holdout.content.decode()
    assert refund_set.cases.get(pk=case.pk).split == "dev"
