"""Growth (issue 16, item 4): Gatehouse on a database of a million decided proposals.

Fills `--database` (default gh_growth_bench) inside PostgreSQL, one INSERT … SELECT FROM
generate_series per table (no Python per row): 1,000,000 decided proposals over six months
(100,000 of them approved by a rule in the last 24 hours, for one service and type, the window of
a spend cap), 100,000 pending across three action types, one review per reviewer decision,
3,000,000 audit events, 1,000,000 model-call log rows over 90 days and 100,000 eval results.
The filled database is kept: a rerun finds it (a marker table) and only moves the recent rows
forward to now, so it takes seconds; `--refill` starts over.

Then it measures, on the Procfile's `web:` (granian WSGI, 2 workers, 8 threads each) with a
logged-in reviewer (queue, history) and a staff superuser (insights, /llm/):
the p95 of each page, the submit's throughput against the same submit on an empty database
(same run), `stats.approved_sum('payload.amount', '24h')` with 100,000 approvals in its window,
`insights.check` over all types, each query's EXPLAIN (ANALYZE, BUFFERS) and the database size
per million proposals.
The submit runs a whole unmeasured round on each database, then `--rounds` rounds of
`--seconds` on each, alternating which goes first; it prints each side's median req/s, the median
of the rounds' full/empty ratios, and the same for their CPU a submit (the server's processes and
that database's backends), which the machine's scheduling moves least.
`--only pile` measures the queue pages again after adding 130,000 pending proposals of one type
in the last two hours (then deletes them): pending rows piled up at the end of the table.

    flock /tmp/gatehouse-bench.lock .venv/bin/python bench/growth.py [--refill] [--only …]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from api_submit import BODY, CAP_RULE  # the same submit and spend cap, empty and full
from common import (
    ROOT,
    SESSIONS,
    bench_env,
    fresh_database,
    manage,
    serve,
    wal_counters,
    wrk_post,
)

SCALE = float(os.environ.get("GROWTH_SCALE", "1"))  # a smaller database to try the fill on
DECIDED = int(1_000_000 * SCALE)
RECENT_APPROVED = int(100_000 * SCALE)  # of DECIDED: approved by a rule in the last 24 h
PENDING = int(100_000 * SCALE)
PILE = int(130_000 * SCALE)  # --only pile: pending proposals of one type, the last 2 hours
LLM_CALLS = int(1_000_000 * SCALE)
EVAL_RESULTS = int(100_000 * SCALE)
EVAL_CASES = int(1_000 * SCALE)
REVIEWERS = 8

CONFIG = """\
action_types:
  - key: refund.issue
    title: Issue a refund
    risk: medium
    reviewer_group: reviewers
    review_sla: 4h
    executor: {kind: none}
    payload_schema:
      type: object
      required: [order_id, amount, currency]
      properties:
        order_id: {type: string}
        amount: {type: number, exclusiveMinimum: 0, maximum: 100000}
        currency: {type: string, enum: [EUR, USD, GBP]}
        reason: {type: string, maxLength: 500}
  - key: credit.grant
    title: Grant account credit
    risk: low
    reviewer_group: reviewers
    executor: {kind: none}
    payload_schema:
      type: object
      required: [account, amount]
      properties:
        account: {type: string}
        amount: {type: number}
  - key: email.send
    title: Send a customer email
    risk: high
    reviewer_group: reviewers
    executor: {kind: none}
    payload_schema:
      type: object
      required: [to, subject]
      properties:
        to: {type: string}
        subject: {type: string}
        amount: {type: number}
"""


WORDS = (
    "ARRAY['late','damaged','missing','duplicate','wrong size','never arrived','refused',"
    "'cancelled','charged twice','broken seal','warranty','goodwill']"
)

# {n}: row count, {base}: first sequence number. Service i proposes type i (ids from the fixtures,
# substituted as {s1} {s2} {s3} {t1} {t2} {t3}); {r0}: the first reviewer's id. Timestamps are
# relative to {anchor} (the fill's now), rows in time order, as they arrive in production.
DECIDED_SQL = """
INSERT INTO approvals_proposal (
    id, service_id, action_type_id, payload, payload_hash, final_payload, confidence, summary,
    rationale, model, prompt_version, feature, external_id, llm_call_id, metadata,
    idempotency_key, request_hash, first_response, state, decision_outcome, decided_by,
    decision_rule, decision_rule_version, decision_reviewer_id, decision_reason, decided_at,
    rule_trace, required_approvals, created_at, updated_at, expires_at, review_due_at,
    sla_reminded_at, escalated_at, expiry_extended_at)
SELECT
    gen_random_uuid(), svc, typ, payload, md5(payload::text) || md5(g::text),
    CASE WHEN by = 'reviewer' AND outcome = 'approve' AND g % 10 = 0
         THEN payload || jsonb_build_object('amount', round((amount * 0.5)::numeric, 2)) END,
    conf, summary, rationale, model, prompt, feature, 'ticket-' || g,
    CASE WHEN g % 3 = 0 THEN gen_random_uuid() END,
    jsonb_build_object('ticket', g, 'channel', (ARRAY['email','chat','phone'])[1 + g % 3]),
    CASE WHEN g % 10 < 3 THEN 'key-' || g END, md5(g::text || 'r'), NULL,
    state, outcome, by,
    CASE WHEN by = 'rule' THEN (ARRAY['small-refunds','trusted-accounts','blocked-countries'])[1 + g % 3] ELSE '' END,
    CASE WHEN by = 'rule' THEN 1 + g % 4 END,
    CASE WHEN by = 'reviewer' THEN {r0} + (g * 7) % {reviewers} END,
    CASE WHEN by = 'reviewer' THEN 'checked the order history' ELSE '' END,
    decided, '[]'::jsonb, NULL, created,
    decided + CASE WHEN state IN ('executed','failed') THEN interval '3 seconds' ELSE interval '0' END,
    created + interval '3 days', CASE WHEN typ = {t1} THEN created + interval '4 hours' END,
    NULL, NULL, NULL
FROM (
    SELECT g, svc, typ, created, amount, conf, state, by,
        CASE WHEN state IN ('approved','executed','failed') THEN 'approve'
             WHEN state = 'rejected' THEN 'reject' ELSE '' END AS outcome,
        CASE WHEN by = 'rule' THEN created + interval '40 milliseconds'
             WHEN state = 'cancelled' THEN created + interval '20 minutes'
             WHEN state = 'expired' THEN created + interval '3 days'
             ELSE created + (g % 7200) * interval '1 second' END AS decided,
        CASE typ WHEN {t3} THEN jsonb_build_object('to', 'c' || g || '@example.com',
                     'subject', 'Your order ORD-' || g, 'amount', amount)
                 WHEN {t2} THEN jsonb_build_object('account', 'ACC-' || (g % 50000), 'amount', amount)
                 ELSE jsonb_build_object('order_id', 'ORD-' || g, 'amount', amount,
                     'currency', (ARRAY['EUR','USD','GBP'])[1 + g % 3], 'reason', word) END AS payload,
        CASE typ WHEN {t3} THEN 'Email customer about order ORD-' || g || ': ' || word
                 WHEN {t2} THEN 'Credit account ACC-' || (g % 50000) || ': ' || word
                 ELSE 'Refund order ORD-' || g || ': ' || word END AS summary,
        'The customer wrote that the parcel was ' || word || '; the order history and the '
            || 'carrier tracking agree, and the amount is within the usual range for this '
            || 'customer segment, so the action follows the policy.' AS rationale,
        CASE WHEN created < {anchor} - interval '90 days' THEN 'gpt-4o-mini' ELSE 'gpt-4.1-mini' END AS model,
        (ARRAY['refunds','credits','emails'])[1 + g % 3] || '@' || (5 + floor(extract(epoch FROM created - ({anchor} - interval '200 days')) / (30 * 86400)))::int AS prompt,
        (ARRAY['support-refunds','support-credits','support-emails'])[1 + g % 3] AS feature
    FROM (
        SELECT g, created,
            (ARRAY[{s1},{s2},{s3}])[1 + g % 3] AS svc,
            (ARRAY[{t1},{t2},{t3}])[1 + g % 3] AS typ,
            round((5 + (g::bigint * 7919 % 100000) / 250.0)::numeric, 2)::float8 AS amount,
            least(0.999, 0.5 + ((g::bigint * 104729) % 500) / 1000.0) AS conf,
            ({words})[1 + (g * 31) % 12] AS word,
            CASE WHEN h < 55 THEN 'executed' WHEN h < 65 THEN 'approved' WHEN h < 68 THEN 'failed'
                 WHEN h < 88 THEN 'rejected' WHEN h < 91 THEN 'cancelled' ELSE 'expired' END AS state,
            CASE WHEN h >= 88 THEN '' WHEN (g * 13) % 100 < 60 THEN 'rule'
                 WHEN (g * 13) % 100 < 95 THEN 'reviewer' ELSE 'policy' END AS by
        FROM (
            SELECT g, (g::bigint * 7919) % 100 AS h,
                {anchor} - interval '181 days' + g * (interval '180 days' / {n}) AS created
            FROM generate_series({base}, {base} + {n} - 1) g
        ) a
    ) b
) c
"""

# The spend cap's window: RECENT_APPROVED approvals by a rule, service 1 and type 1, last 23 h.
RECENT_SQL = """
INSERT INTO approvals_proposal (
    id, service_id, action_type_id, payload, payload_hash, confidence, summary, rationale, model,
    prompt_version, feature, external_id, metadata, idempotency_key, request_hash, state,
    decision_outcome, decided_by, decision_rule, decision_rule_version, decision_reason,
    decided_at, rule_trace, created_at, updated_at, expires_at, review_due_at)
SELECT gen_random_uuid(), {s1}, {t1}, payload, md5(payload::text) || md5(g::text), 0.95,
    'Refund order ORD-' || g || ': late', 'Within the small-refund policy.', 'gpt-4.1-mini',
    'refunds@11', 'support-refunds', 'ticket-' || g, '{{"channel": "chat"}}'::jsonb, 'key-' || g,
    md5(g::text), CASE WHEN g % 4 = 0 THEN 'approved' ELSE 'executed' END, 'approve', 'rule',
    'small-refunds', 4, '', created + interval '40 milliseconds', '[]'::jsonb, created,
    created + interval '3 seconds', created + interval '3 days', created + interval '4 hours'
FROM (
    SELECT g, {anchor} - interval '23 hours' + (g - {base}) * (interval '23 hours' / {n}) AS created,
        jsonb_build_object('order_id', 'ORD-' || g, 'amount', round((5 + (g % 400) / 4.0)::numeric, 2),
            'currency', 'EUR', 'reason', 'late') AS payload
    FROM generate_series({base}, {base} + {n} - 1) g
) a
"""

PENDING_SQL = """
INSERT INTO approvals_proposal (
    id, service_id, action_type_id, payload, payload_hash, confidence, summary, rationale, model,
    prompt_version, feature, external_id, metadata, request_hash, state, decision_outcome,
    decided_by, decision_rule, decision_reason, rule_trace, created_at, updated_at, expires_at,
    review_due_at)
SELECT gen_random_uuid(), (ARRAY[{s1},{s2},{s3}])[1 + g % 3], (ARRAY[{t1},{t2},{t3}])[1 + g % 3],
    payload, md5(payload::text) || md5(g::text), 0.3 + (g % 60) / 100.0,
    'Pending order ORD-' || g || ': needs a look', 'Above the automatic threshold.',
    'gpt-4.1-mini', 'refunds@11', 'support-refunds', 'ticket-' || g, '{{}}'::jsonb, md5(g::text),
    'pending_review', '', '', '', '',
    '[{{"rule": "large-refunds", "matched": true, "outcome": "review"}}]'::jsonb,
    created, created, created + interval '30 days',
    CASE WHEN g % 3 = 0 THEN created + interval '4 hours' END
FROM (
    SELECT g, {anchor} - {span} + (g - {base}) * ({span} / {n}) AS created,
        jsonb_build_object('order_id', 'ORD-' || g, 'amount', 500 + g % 5000, 'currency', 'EUR') AS payload
    FROM generate_series({base}, {base} + {n} - 1) g
) a
"""

REVIEWS_SQL = """
INSERT INTO approvals_review (verdict, comment, edited_payload, payload_hash, created_at,
    proposal_id, reviewer_id)
SELECT CASE decision_outcome WHEN 'approve' THEN 'approve' ELSE 'reject' END, '', final_payload,
    payload_hash, decided_at, id, decision_reviewer_id
FROM approvals_proposal WHERE decided_by = 'reviewer'
"""

# received + routed/decided (+ executing + executed/failed): AUDIT_EVENTS in all.
AUDIT_SQL = """
INSERT INTO approvals_auditevent (kind, from_state, to_state, actor, data, created_at, proposal_id)
SELECT e.kind, e.from_state, e.to_state, e.actor, e.data, e.at, p.id
FROM (SELECT * FROM approvals_proposal ORDER BY created_at LIMIT {limit}) p
CROSS JOIN LATERAL (VALUES
    (1, 'proposal.received', '', 'received', 'service:growth-' || p.service_id, '{{}}'::jsonb, p.created_at),
    (2, 'proposal.' || p.state, 'received', CASE WHEN p.state IN ('executed','failed') THEN 'approved' ELSE p.state END,
        CASE p.decided_by WHEN 'rule' THEN 'rule:' || p.decision_rule WHEN 'reviewer' THEN 'user:reviewer' || p.decision_reviewer_id ELSE 'system' END,
        jsonb_build_object('reason', p.decision_reason), coalesce(p.decided_at, p.created_at)),
    (3, 'proposal.executing', 'approved', 'executing', 'system', '{{}}'::jsonb, p.updated_at),
    (4, 'proposal.' || p.state, 'executing', p.state, 'system', '{{"status": 200}}'::jsonb, p.updated_at)
) AS e(n, kind, from_state, to_state, actor, data, at)
WHERE e.n = 1 OR (e.n = 2 AND p.state <> 'pending_review') OR (e.n > 2 AND p.state IN ('executed','failed'))
ORDER BY p.created_at, e.n
"""

LLM_SQL = """
INSERT INTO llmcalls_llmcall (
    id, created_at, feature, route, service, provider, model, stream, messages, params,
    response_text, tool_calls, finish_reason, status, error_class, error_message, attempts,
    attempt_log, fallback_path, fell_back, cache_hit, over_budget, latency_ms, ttft_ms,
    input_tokens, output_tokens, cached_tokens, cost_usd, price_missing, provider_request_id,
    text_purged_at, cache_saved_usd, cache_similarity, cache_source)
SELECT gen_random_uuid(), created, feature, feature, svc, 'openai', model, g % 5 = 0,
    CASE WHEN purged THEN '[]'::jsonb ELSE jsonb_build_array(
        jsonb_build_object('role', 'system', 'content', 'You triage support tickets for ' || feature || '.'),
        jsonb_build_object('role', 'user', 'content', 'Ticket ' || g || ': my parcel arrived late, I want a refund of part of the price.')) END,
    '{{"temperature": 0}}'::jsonb,
    CASE WHEN purged OR status <> 'ok' THEN '' ELSE '{{"action": "refund.issue", "amount": ' || (g % 400) || ', "confidence": 0.8}}' END,
    NULL, CASE WHEN status = 'ok' THEN 'stop' ELSE '' END, status,
    CASE WHEN status = 'error' THEN 'timeout' ELSE '' END,
    CASE WHEN status = 'error' THEN 'the provider did not answer within 20 s' ELSE '' END,
    CASE WHEN g % 25 = 0 THEN 2 ELSE 1 END, '[]'::jsonb, '[]'::jsonb, g % 25 = 0, g % 17 = 0,
    status = 'refused', 200 + (g::bigint * 7919) % 2500, CASE WHEN g % 5 = 0 THEN 150 + g % 400 END,
    800 + g % 1200, 60 + g % 300, CASE WHEN g % 4 = 0 THEN 512 END,
    CASE WHEN status = 'ok' AND model <> 'local-llama' THEN ((800 + g % 1200) * 0.15 + (60 + g % 300) * 0.6) / 1e6 END,
    model = 'local-llama', 'req-' || g, CASE WHEN purged THEN created + interval '30 days' END,
    NULL, NULL, NULL
FROM (
    SELECT g, created, created < {anchor} - interval '30 days' AS purged,
        (ARRAY['support-refunds','support-credits','support-emails','triage'])[1 + g % 4] AS feature,
        (ARRAY['growth-1','growth-2','growth-3',''])[1 + g % 4] AS svc,
        CASE WHEN g % 50 = 0 THEN 'local-llama' WHEN g % 3 = 0 THEN 'gpt-4o-mini' ELSE 'gpt-4.1-mini' END AS model,
        CASE WHEN g % 100 < 95 THEN 'ok' WHEN g % 100 < 99 THEN 'error' ELSE 'refused' END AS status
    FROM (SELECT g, {anchor} - interval '90 days' + g * (interval '90 days' / {n}) AS created
          FROM generate_series(1, {n}) g) a
) b
"""

EVAL_CASES_SQL = """
INSERT INTO evals_evalcase (input, ideal, tags, split, source, fingerprint, created_at, proposal_id, eval_set_id)
SELECT jsonb_build_object('ticket', 'Parcel ' || g || ' arrived late'),
    jsonb_build_object('action', 'refund.issue'), '[]'::jsonb, 'dev', 'manual', md5('case' || g),
    {anchor} - interval '60 days', NULL, {eval_set}
FROM generate_series(1, {n}) g
"""

EVAL_RUNS_SQL = """
INSERT INTO evals_evalrun (route, split, repeat, scorer, model_graded, batch, label, status, error,
    started_at, finished_at, n_cases, n_correct, accuracy, cost_usd, totals, baseline_id,
    created_by_id, eval_set_id, prompt_version_id)
SELECT 'support-refunds', 'dev', 1, 'exact', false, gen_random_uuid(), 'nightly ' || g, 'done', '',
    {anchor} - (g || ' days')::interval, {anchor} - (g || ' days')::interval + interval '10 minutes',
    {cases}, {cases} * 8 / 10, 0.8, 1.25, '{{}}'::jsonb, NULL, NULL, {eval_set}, {prompt_version}
FROM generate_series(1, {n}) g
"""

EVAL_RESULTS_SQL = """
INSERT INTO evals_evalresult (attempt, output, score, passed, detail, error, latency_ms, cost_usd,
    case_id, grader_call_id, llm_call_id, run_id)
SELECT 0, '{{"action": "refund.issue"}}', (c.id % 5 <> 0)::int, c.id % 5 <> 0, '', '',
    300 + c.id % 700, 0.0012, c.id, NULL, NULL, r.id
FROM evals_evalrun r CROSS JOIN evals_evalcase c
WHERE r.eval_set_id = {eval_set} AND c.eval_set_id = {eval_set}
"""

# Insights' audit samples: rule approvals sent to a reviewer instead (2% of reviewer decisions).
AUDIT_SAMPLES_SQL = """
INSERT INTO insights_auditsample (fraction, rule, rule_version, created_at, action_type_id, proposal_id)
SELECT 0.02, 'small-refunds', 1, created_at, action_type_id, id
FROM approvals_proposal WHERE decided_by = 'reviewer' AND abs(hashtext(id::text)) % 50 = 0
"""

MARKER = "growth_bench_fill"


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def setup_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def fixtures() -> dict[str, int]:
    from django.contrib.auth.models import Group, User

    from approvals.models import ActionType, Service
    from evals.models import EvalSet, Prompt, PromptVersion
    from llmcalls.models import FeatureGrant

    types = [ActionType.objects.get(key=k) for k in ("refund.issue", "credit.grant", "email.send")]
    group = Group.objects.get(name="reviewers")
    ids: dict[str, int] = {}
    for i, t in enumerate(types, start=1):
        service = Service.objects.get(name=f"growth-{i}")
        ids[f"s{i}"] = service.pk
        ids[f"t{i}"] = t.pk
        FeatureGrant.objects.get_or_create(
            service=service, feature=f"support-{t.key.split('.')[0]}"
        )
    reviewers = []
    for i in range(REVIEWERS):
        user, _ = User.objects.get_or_create(username=f"reviewer{i}", defaults={"is_staff": True})
        user.groups.add(group)
        reviewers.append(user.pk)
    assert reviewers == list(range(reviewers[0], reviewers[0] + REVIEWERS)), reviewers
    ids["r0"] = reviewers[0]
    User.objects.get_or_create(username="staff", defaults={"is_staff": True, "is_superuser": True})
    prompt, _ = Prompt.objects.get_or_create(name="refunds")
    version, _ = PromptVersion.objects.get_or_create(
        prompt=prompt, version=1, defaults={"template": [], "route": "support-refunds"}
    )
    eval_set, _ = EvalSet.objects.get_or_create(name="refunds", feature="support-refunds")
    ids["eval_set"] = eval_set.pk
    ids["prompt_version"] = version.pk
    return ids


def fill(database: str, env: dict[str, str]) -> None:
    """Creates the database and fills it (a few minutes)."""
    fresh_database(database)
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "apply", "-", stdin=CONFIG)
    for i, key in enumerate(("refund.issue", "credit.grant", "email.send"), start=1):
        manage(env, "create_service", f"growth-{i}", "--action-types", key, "--json")
    setup_django(env)
    from django.db import connection

    ids = fixtures()
    anchor = "'{}'::timestamptz".format(time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime()))
    values = {**ids, "anchor": anchor, "reviewers": REVIEWERS, "words": WORDS}
    steps: list[tuple[str, str]] = [
        ("decided proposals", DECIDED_SQL.format(n=DECIDED - RECENT_APPROVED, base=1, **values)),
        ("recent approvals", RECENT_SQL.format(n=RECENT_APPROVED, base=DECIDED, **values)),
        (
            "pending proposals",
            PENDING_SQL.format(n=PENDING, base=2 * DECIDED, span="interval '7 days'", **values),
        ),
        ("reviews", REVIEWS_SQL),
        ("audit samples", AUDIT_SAMPLES_SQL),
        ("audit events", AUDIT_SQL.format(limit=DECIDED + PENDING)),
        ("model calls", LLM_SQL.format(n=LLM_CALLS, **values)),
        ("eval cases", EVAL_CASES_SQL.format(n=EVAL_CASES, **values)),
        (
            "eval runs",
            EVAL_RUNS_SQL.format(n=EVAL_RESULTS // EVAL_CASES, cases=EVAL_CASES, **values),
        ),
        ("eval results", EVAL_RESULTS_SQL.format(**values)),
    ]
    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")
        cursor.execute("SET maintenance_work_mem = '512MB'")
        cursor.execute("SET work_mem = '256MB'")
        for name, sql in steps:
            t0 = time.monotonic()
            cursor.execute(sql)
            print(
                f"  {name}: {cursor.rowcount:,} rows, {time.monotonic() - t0:.0f} s ({loadavg()})"
            )
        # Only the first AUDIT_EVENTS events a proposal would have: trim none, report the count.
        cursor.execute("SELECT count(*) FROM approvals_auditevent")
        print(f"  audit events in all: {cursor.fetchone()[0]:,}")
    with connection.cursor() as cursor:
        t0 = time.monotonic()
        cursor.execute("VACUUM (ANALYZE)")
        print(f"  vacuum analyze: {time.monotonic() - t0:.0f} s")
        cursor.execute(
            f"CREATE TABLE {MARKER} (anchor timestamptz NOT NULL, filled_s float8 NOT NULL)"
        )
        cursor.execute(
            "INSERT INTO growth_bench_fill VALUES (" + anchor + ", %s)",  # noqa: S608 - our timestamp
            [time.monotonic() - started],
        )
    print(f"filled in {time.monotonic() - started:.0f} s ({loadavg()})")


def filled(database: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{database}") as conn:
            row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [MARKER]).fetchone()
            return bool(row and row[0])
    except psycopg.OperationalError:
        return False


def move_to_now(env: dict[str, str]) -> None:
    """Reuse: shift the last day's rows (the cap's window, the pending queue) to end now."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")
        cursor.execute("SELECT NOT EXISTS (SELECT 1 FROM insights_auditsample)")
        if cursor.fetchone()[0]:  # filled before the bench took audit samples
            cursor.execute(AUDIT_SAMPLES_SQL)
            print(f"reuse: {cursor.rowcount:,} audit samples added")
        cursor.execute("SELECT now() - anchor FROM growth_bench_fill")
        (shift,) = cursor.fetchone()
        if shift < timedelta(minutes=5):
            return
        t0 = time.monotonic()
        cursor.execute(
            "UPDATE approvals_proposal SET created_at = created_at + %s, "
            "updated_at = updated_at + %s, decided_at = decided_at + %s, "
            "expires_at = expires_at + %s, review_due_at = review_due_at + %s "
            "WHERE created_at >= (SELECT anchor FROM growth_bench_fill) - interval '7 days'",
            [shift] * 5,
        )
        moved = cursor.rowcount
        cursor.execute("UPDATE growth_bench_fill SET anchor = anchor + %s", [shift])
        # Autovacuum's work after a day of approvals, done at once after moving them all.
        cursor.execute("VACUUM (ANALYZE) approvals_proposal")
        cursor.execute("VACUUM (ANALYZE) approvals_approvedsum")
        cursor.execute("SELECT to_regclass('approvals_approvedhoursum') IS NOT NULL")
        if cursor.fetchone()[0]:  # approvals 0017
            cursor.execute("VACUUM (ANALYZE) approvals_approvedhoursum")
        print(
            f"reuse: moved {moved:,} rows of the last 7 days forward by {shift} "
            f"in {time.monotonic() - t0:.0f} s"
        )


# --- measurements ------------------------------------------------------------------------------


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


def timed(fn: Callable[[], Any], n: int) -> list[float]:
    fn()  # warm
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


SESSION_CODE = """
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore

for name in {names!r}:
    user = User.objects.get(username=name)
    store = SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.save()
    print(name, settings.SESSION_COOKIE_NAME + "=" + store.session_key)
"""


def session_cookies(env: dict[str, str], names: tuple[str, ...]) -> dict[str, str]:
    """A logged-in session of each user on env's database (manage.py shell: any database)."""
    out = manage(env, "shell", "-c", SESSION_CODE.format(names=names))
    found = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    return {name: found[name] for name in names}


def get_page(url: str, cookie: str) -> tuple[int, int]:
    request = urllib.request.Request(url, headers={"Cookie": cookie})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status, len(response.read())


def page_paths() -> list[tuple[str, str, str]]:
    """(name, path, who): the reviewer (group member) or the staff superuser."""
    reviewer, staff = "reviewer1", "staff"
    paths = [
        ("queue", "/", reviewer),
        ("queue ?order=due (due first)", "/?order=due", reviewer),
        ("queue ?type=email.send", "/?type=email.send", reviewer),
        ("history", "/history/", reviewer),
        ("history ?state=failed", "/history/?state=failed", reviewer),
        ("history ?state=rejected", "/history/?state=rejected", reviewer),
        ("history ?by=reviewer", "/history/?by=reviewer", reviewer),
        ("history ?mine=1", "/history/?mine=1", reviewer),
        ("history ?type=credit.grant", "/history/?type=credit.grant", reviewer),
        ("history ?q=ORD-4242 (text)", "/history/?q=ORD-4242", reviewer),
        ("history ?q=ticket-4242 (external id)", "/history/?q=ticket-4242", reviewer),
        ("/insights/", "/insights/", staff),
        ("/insights/refund.issue/", "/insights/refund.issue/", staff),
        ("/llm/", "/llm/", staff),
        ("/llm/ (reviewer)", "/llm/", reviewer),
    ]
    return paths


def pages(
    env: dict[str, str],
    requests: int,
    *,
    floor_env: dict[str, str] | None,
    port: int,
    warmup: int = 16,
    paths: list[tuple[str, str, str]] | None = None,
) -> list[tuple[str, float, float]]:
    """Each page's p50 and p95, one request at a time. With `floor_env` (the same fixtures at a
    hundredth of the size) each page is measured there right before, and the ratio printed.

    `warmup` requests of each page go first, unmeasured: the pool hands its connections out in
    turn, so 16 (2 workers of 8 threads) have each of the 16 PostgreSQL backends run the page's
    statements once. A backend's first plan of a statement reads the catalog (the queue's
    proposals statement planned in 2.75 ms on a fresh backend, 0.3 after), a cost of the first
    minutes after a start, not of the rows; the figures are of a server that has been serving.
    """
    import contextlib

    who = ("reviewer1", "staff")
    rows = []
    with contextlib.ExitStack() as stack:
        targets = []
        for i, server_env in enumerate([e for e in (floor_env, env) if e is not None]):
            base = stack.enter_context(
                serve(
                    server_env, server="granian-wsgi", workers=2, threads=8, port=port and port + i
                )
            )
            targets.append((base, session_cookies(server_env, who)))
        for name, path, user in paths or page_paths():
            figures = []
            for base, cookies in targets:
                samples = []
                status = 0
                for _ in range(max(warmup, 1)):
                    get_page(base + path, cookies[user])
                for _ in range(requests):
                    t0 = time.perf_counter()
                    status, _size = get_page(base + path, cookies[user])
                    samples.append((time.perf_counter() - t0) * 1000)
                figures.append((statistics.median(samples), p95(samples), status))
            p50_full, p95_full, status = figures[-1]
            rows.append((name, p50_full, p95_full))
            floor = ""
            if len(figures) == 2:
                p50_small, p95_small, _ = figures[0]
                floor = (
                    f"  floor p50 {p50_small:6.1f} p95 {p95_small:6.1f} ms"
                    f"  p95 ratio {p95_full / p95_small:5.2f}"
                )
            print(
                f"  {name:38} p50 {p50_full:7.1f} ms  p95 {p95_full:7.1f} ms{floor}  "
                f"(HTTP {status}, {loadavg()})"
            )
    return rows


def pile(env: dict[str, str], args: argparse.Namespace) -> None:
    """The queue when pending proposals of one type pile up: PILE of refund.issue in the last two
    hours (a service flooding the queue, as the submit rounds here do), analysed as autovacuum
    would, the queue pages measured, then the pile deleted. The planner, pricing the plain
    created_at index as if pending rows were spread evenly over time, walked 870,017 decided
    rows for the first page (migration 0020)."""
    from django.db import connection

    ids = fixtures()
    one_type = {**ids, "s2": ids["s1"], "s3": ids["s1"], "t2": ids["t1"], "t3": ids["t1"]}
    values = {**one_type, "anchor": "now()", "reviewers": REVIEWERS, "words": WORDS}
    base = 3 * DECIDED
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")
        cursor.execute(PENDING_SQL.format(n=PILE, base=base, span="interval '2 hours'", **values))
        cursor.execute("ANALYZE approvals_proposal")
        cursor.execute("SELECT count(*) FROM approvals_proposal WHERE state = 'pending_review'")
        (pending,) = cursor.fetchone()
    print(
        f"\nthe queue with {PILE:,} more pending refund.issue in the last 2 hours ({pending:,} pending):"
    )
    try:
        queue = [(n, p, who) for n, p, who in page_paths() if n.startswith("queue")]
        queue.append(
            ("queue ?type=email.send&order=newest", "/?type=email.send&order=newest", "reviewer1")
        )
        pages(env, args.requests, floor_env=None, port=args.port, warmup=args.warmup, paths=queue)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM approvals_proposal WHERE external_id IN "
                "(SELECT 'ticket-' || g FROM generate_series(%s, %s) g)",
                [base, base + PILE - 1],
            )
            cursor.execute("VACUUM (ANALYZE) approvals_proposal")


def submit_key(database: str) -> str:
    """An API key of growth-1, the service whose spend cap has 100,000 approvals in its window,
    with the cap rule loaded (in-process: Django is set up on `database`)."""
    from approvals import services
    from approvals.models import Service

    _key, secret = services.api_key_create(service=Service.objects.get(name="growth-1"))
    return secret


def submit(
    runs: list[tuple[str, dict[str, str], str]], seconds: int, rounds: int, *, port: int
) -> tuple[list[float], list[float], list[float]]:
    """The submit on each (name, env, key), rounds alternating which goes first. Returns each
    side's median req/s; for each side after the first, the median of its rounds' req/s over
    the first side's in the same round; and the median of the first side's CPU a submit (its
    server's processes and its database's backends) over this side's in the same round."""
    import contextlib

    figures: list[list[float]] = [[] for _ in runs]
    cpu: list[list[float]] = [[] for _ in runs]
    with contextlib.ExitStack() as stack:
        urls = [
            stack.enter_context(
                serve(env, server="granian-wsgi", workers=2, threads=8, port=port and port + i)
            )
            for i, (_name, env, _key) in enumerate(runs)
        ]

        def post(i: int, seconds: int) -> dict[str, float]:
            """A run on side i; its CPU is that server's processes' and that database's."""
            _name, env, key = runs[i]
            return wrk_post(
                urls[i] + "/api/v1/proposals",
                BODY,
                auth=f"Bearer {key}",
                seconds=seconds,
                database=env["DATABASE_URL"].rsplit("/", 1)[1],
                sessions={SESSIONS[urls[i]]},
            )

        # A whole unmeasured round each: the empty database is created for this run, and after
        # a 2 s warm-up its first measured round ran 15 and 18 % under the median of its others in
        # two of three runs.
        for i in range(len(runs)):
            post(i, seconds)
        for round_ in range(rounds):
            # Each round swaps which side goes first, so neither always follows the other.
            order = list(range(len(runs)))
            for i in order if round_ % 2 == 0 else order[::-1]:
                name = runs[i][0]
                wal = wal_counters()
                run = post(i, seconds)
                written = wal_counters()
                records, fpi, wal_bytes = (
                    written[counter] - wal[counter]
                    for counter in ("wal_records", "wal_fpi", "wal_bytes")
                )
                figures[i].append(run["rps"])
                cpu[i].append(run["cpu_ms_server"] + run["cpu_ms_postgres"])
                n = max(run["requests"], 1)
                print(
                    f"  {name}: {run['rps']:.0f} req/s p50 {run['p50_ms']:.0f} ms "
                    f"p99 {run['p99_ms']:.0f} ms non2xx {run['non2xx']:.0f}; a submit: "
                    f"server {run['cpu_ms_server']:.2f} ms CPU, "
                    f"PostgreSQL {run['cpu_ms_postgres']:.2f} ms CPU, WAL {wal_bytes / n / 1024:.1f} KB "
                    f"in {records / n:.1f} records, {fpi / n:.2f} full-page images ({loadavg()})"
                )
    by_round = [
        statistics.median(side / first for side, first in zip(figures[i], figures[0], strict=True))
        for i in range(1, len(runs))
    ]
    cpu_by_round = [
        statistics.median(first / side for side, first in zip(cpu[i], cpu[0], strict=True))
        for i in range(1, len(runs))
    ]
    return [statistics.median(f) for f in figures], by_round, cpu_by_round


def explain(sql: str, params: list[Any]) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        # A captured statement has its values inlined: no placeholders to fill (a LIKE's %).
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params or None)
        return "\n".join(row[0] for row in cursor.fetchall())


def page_queries(min_ms: float) -> None:
    """Each page's statements (in-process, the test client), EXPLAIN (ANALYZE, BUFFERS) of those
    slower than `min_ms`: the plan's top lines, buffers and execution time."""
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    clients = {}
    for who in ("reviewer1", "staff"):
        clients[who] = Client(HTTP_HOST="localhost")
        clients[who].force_login(User.objects.get(username=who))
    for name, path, who in page_paths():
        clients[who].get(path)  # warm
        with CaptureQueriesContext(connection) as captured:
            response = clients[who].get(path)
        total = sum(float(q["time"]) for q in captured.captured_queries) * 1000
        print(
            f"\n### {name}: HTTP {response.status_code}, {len(captured)} statements, "
            f"{total:.1f} ms in the database"
        )
        for query in captured.captured_queries:
            if float(query["time"]) * 1000 < min_ms:
                continue
            plan = explain(query["sql"], [])
            print(f"  {float(query['time']) * 1000:.1f} ms: {query['sql'][:300]}")
            nodes = [
                line.strip()
                for line in plan.splitlines()
                if any(word in line for word in ("Scan", "Aggregate", "Sort Method", "Removed"))
            ]
            print("    " + "\n    ".join(nodes[:8]))
            print("    " + plan.splitlines()[-1].strip())


def fill_floor(args: argparse.Namespace) -> None:
    """The floor's database: this fill at a hundredth of the size (its own process: the scale
    is the module's), reused like the full one."""
    import subprocess

    argv = [sys.executable, __file__, "--database", args.floor_database, "--fill-only"]
    floor = {**os.environ, "GROWTH_SCALE": str(SCALE / 100)}
    subprocess.run(argv, env=floor, check=True, stdout=subprocess.DEVNULL)


def measure(args: argparse.Namespace, env: dict[str, str]) -> None:
    from django.db import connection
    from django.utils import timezone

    from approvals import velocity
    from approvals.models import ActionType, Proposal, Service

    if "sizes" in args.only:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM approvals_proposal")
            (proposals,) = cursor.fetchone()
            cursor.execute("SELECT pg_database_size(current_database())")
            (size,) = cursor.fetchone()
            print(
                f"\ndatabase: {size / 2**30:.2f} GiB for {proposals:,} proposals: "
                f"{size / 2**30 / (proposals / 1e6):.2f} GiB per million proposals"
            )
            cursor.execute(
                "SELECT c.relname, c.reltuples::bigint, pg_total_relation_size(c.oid), "
                "pg_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind = 'r' "
                "ORDER BY pg_total_relation_size(c.oid) DESC LIMIT 8"
            )
            for relname, tuples, total, heap in cursor.fetchall():
                print(
                    f"  {relname:32} {tuples:>11,} rows  {total / 2**20:8.0f} MiB "
                    f"(heap {heap / 2**20:.0f} MiB, indexes and TOAST {(total - heap) / 2**20:.0f} MiB)"
                )
    service = Service.objects.get(name="growth-1")
    refund = ActionType.objects.get(key="refund.issue")
    if "sum" in args.only:
        now = timezone.now()
        window = Proposal.objects.filter(
            service=service,
            action_type=refund,
            decision_outcome="approve",
            decided_at__gte=now - timedelta(hours=24),
        ).count()

        def cap() -> float:
            return velocity.approved_sum(
                service_id=service.pk,
                action_type_id=refund.pk,
                field_path="payload.amount",
                window="24h",
                as_of=timezone.now(),
            )

        samples = timed(cap, 20)
        print(
            f"\nstats.approved_sum('payload.amount', '24h') over {window:,} approvals: "
            f"median {statistics.median(samples):.2f} ms, p95 {p95(samples):.2f} ms = {cap():,.2f}"
        )
    if "check" in args.only:
        from insights.services import insights_check

        t0 = time.perf_counter()
        result = insights_check()
        print(
            f"\ninsights.check over {ActionType.objects.count()} types: "
            f"{(time.perf_counter() - t0) * 1000:.0f} ms ({len(result.alerts)} alerts, "
            f"{len(result.brakes)} brakes) ({loadavg()})"
        )
    if "explain" in args.only or "pages" in args.only or "pile" in args.only:
        manage(env, "collectstatic", "--noinput", "-v", "0")  # the pages' manifest (DEBUG off)
    if "explain" in args.only:
        page_queries(args.explain_ms)
    if "pages" in args.only:
        print(
            f"\npages, {args.requests} requests each after {args.warmup} unmeasured, one at a time,"
            " granian WSGI:"
        )
        floor_env = None
        if args.floor_database:
            floor_env = bench_env(args.floor_database, DB_POOL_MAX="8", REDIS_URL=args.redis_url)
            fill_floor(args)
        pages(env, args.requests, floor_env=floor_env, port=args.port, warmup=args.warmup)
    if "submit" in args.only:
        print(
            "\nsubmit (POST /api/v1/proposals as growth-1, a spend-cap rule, wrk -c32), "
            "empty and full database in alternate rounds:"
        )
        empty_env = bench_env(args.empty_database, DB_POOL_MAX="8", REDIS_URL=args.redis_url)
        fresh_database(args.empty_database)
        manage(empty_env, "migrate", "--noinput", "-v", "0")
        manage(empty_env, "apply", "-", stdin=CONFIG)
        manage(empty_env, "apply", "-", stdin=CAP_RULE)
        empty_key = json.loads(
            manage(
                empty_env, "create_service", "growth-1", "--action-types", "refund.issue", "--json"
            )
        )["api_key"]
        manage(env, "apply", "-", stdin=CAP_RULE)
        (empty, full), (by_round,), (by_cpu,) = submit(
            [("empty", empty_env, empty_key), ("full", env, submit_key(args.database))],
            args.seconds,
            args.rounds,
            port=args.port,
        )
        print(
            f"submit: empty {empty:.0f} req/s, full {full:.0f} req/s: {full / empty:.2f}x; "
            f"median of the rounds' full/empty {by_round:.2f}x; of their CPU a submit "
            f"(server and PostgreSQL), empty/full {by_cpu:.2f}x"
        )
    if "pile" in args.only:  # last: its rows are added and deleted, which leaves the table changed
        pile(env, args)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", default="gh_growth_bench")
    parser.add_argument("--empty-database", default="gh_growth_empty")
    parser.add_argument("--refill", action="store_true")
    parser.add_argument("--fill-only", action="store_true")
    parser.add_argument("--requests", type=int, default=40, help="per page")
    parser.add_argument(
        "--warmup", type=int, default=16, help="unmeasured requests per page first (0: one)"
    )
    parser.add_argument("--seconds", type=int, default=8, help="per submit round")
    parser.add_argument("--rounds", type=int, default=10, help="submit rounds on each database")
    parser.add_argument("--explain-ms", type=float, default=5.0)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/4")
    parser.add_argument(
        "--floor-database",
        default="gh_growth_small",
        help="the pages' floor: the same fill at a hundredth of the size (kept; '' for none)",
    )
    parser.add_argument("--port", type=int, default=0, help="first of 3 ports (else free ones)")
    parser.add_argument(
        "--only",
        nargs="*",
        default=["sizes", "sum", "check", "explain", "pages", "submit", "pile"],
    )
    args = parser.parse_args()
    env = bench_env(args.database, DB_POOL_MAX="8", REDIS_URL=args.redis_url)
    print(f"load before: {loadavg()}")
    if args.refill or not filled(args.database):
        fill(args.database, env)
    else:
        setup_django(env)
        manage(env, "migrate", "--noinput", "-v", "0")
        move_to_now(env)
    if args.fill_only:
        return
    measure(args, env)
    print(f"load after: {loadavg()}")


if __name__ == "__main__":
    main()
