"""The SQL that fills a Gatehouse database for bench/growth.py: set-based INSERT … SELECT over
generate_series, never the ORM row by row, so a million proposals take minutes, not hours.

What it writes (each figure scales with the arguments):
- `decided` decided proposals over `days` days across three action types and four services,
  their payloads with amounts; of them `burst` approved by a rule in the last 23 hours for one
  service and type (the window a `stats.approved_sum(..., '24h')` cap reads);
- three audit events per decided proposal (received, routed or decided, the outcome);
- a review per reviewer-decided proposal (a quarter of the approvals edited), audit samples;
- `pending` proposals waiting for review over the last 20 hours, across the three types;
- `llmcalls` model-call log rows over the same months, `evals` eval results.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scale:
    decided: int = 1_000_000
    burst: int = 100_000
    pending: int = 100_000
    llmcalls: int = 1_000_000
    evals: int = 100_000
    days: int = 180


# Proposals: decided ones, ids g in 1..decided. A random draw per row picks the outcome:
#   < .55 approved by a rule, executed      .55-.60 rejected by a rule
#   .60-.80 approved by a reviewer (a quarter edited), executed; .79-.80 of them failed
#   .80-.92 rejected by a reviewer          .92-.96 expired     .96-1 cancelled
# The last `burst` ids are the cap's window: checkout-bot's refund.issue, approved by a rule.
PROPOSALS = """
INSERT INTO approvals_proposal (
    id, service_id, action_type_id, payload, payload_hash, final_payload, confidence, summary,
    rationale, model, prompt_version, feature, external_id, llm_call_id, metadata,
    idempotency_key, request_hash, first_response, state, decision_outcome, decided_by,
    decision_rule, decision_rule_version, decision_reviewer_id, decision_reason, decided_at,
    rule_trace, created_at, updated_at, expires_at)
SELECT
    md5('p' || g)::uuid, svc, typ,
    payload, md5(payload::text) || md5(g::text),
    CASE WHEN r >= .60 AND r < .65 THEN payload || '{"amount": 10.0}' END,
    conf, summary, 'The customer reported the issue and the order history agrees. ',
    model, prompt, feature, 'ticket-' || g, NULL,
    jsonb_build_object('ticket', g, 'channel', (ARRAY['email','chat','phone'])[1 + g %% 3]),
    NULL, '', NULL,
    CASE WHEN r < .55 THEN 'executed' WHEN r < .60 THEN 'rejected' WHEN r < .79 THEN 'executed'
         WHEN r < .80 THEN 'failed' WHEN r < .92 THEN 'rejected' WHEN r < .96 THEN 'expired'
         ELSE 'cancelled' END,
    CASE WHEN r < .55 THEN 'approve' WHEN r < .60 THEN 'reject' WHEN r < .80 THEN 'approve'
         WHEN r < .92 THEN 'reject' WHEN r < .96 THEN 'expire' ELSE 'cancel' END,
    CASE WHEN r < .60 THEN 'rule' WHEN r < .92 THEN 'reviewer' ELSE '' END,
    CASE WHEN r < .55 THEN 'auto-small' WHEN r < .60 THEN 'deny-blocked' ELSE '' END,
    CASE WHEN r < .60 THEN 1 END,
    CASE WHEN r >= .60 AND r < .92 THEN
        (CASE WHEN typ = %(shipment)s THEN %(logistics)s::int[] ELSE %(payments)s::int[] END)
            [1 + g %% 2] END,
    '', decided, '[]', created, decided + interval '2 seconds', created + interval '24 hours'
FROM (
    SELECT g, r, created,
        created + CASE WHEN r < .60 THEN interval '20 milliseconds'
                       ELSE (random() * 90 + 1) * interval '1 minute' END AS decided,
        CASE WHEN g > %(decided)s - %(burst)s THEN %(refund)s
             ELSE (ARRAY[%(refund)s, %(credit)s, %(shipment)s])[1 + g %% 3] END AS typ,
        CASE WHEN g > %(decided)s - %(burst)s THEN %(checkout)s
             ELSE (ARRAY[%(support)s, %(billing)s, %(logistics_svc)s])[1 + g %% 3] END AS svc,
        jsonb_build_object('order_id', 'ORD-' || (100000 + g), 'amount',
            round((random() * 480 + 5)::numeric, 2), 'currency',
            (ARRAY['EUR','USD','GBP'])[1 + g %% 3], 'reason', 'late delivery') AS payload,
        round(random()::numeric, 3) AS conf,
        (ARRAY['Refund order ', 'Credit account for order ', 'Reroute shipment of order '])
            [1 + g %% 3] || 'ORD-' || (100000 + g) || ': parcel arrived late' AS summary,
        (ARRAY['gpt-4o-mini', 'gpt-4o', 'claude-3-5-haiku'])[1 + (g / 7) %% 3] AS model,
        (ARRAY['refunds@', 'credits@', 'reroutes@'])[1 + g %% 3]
            || (1 + floor(extract(epoch FROM now() - created) / 86400 / 30))::int AS prompt,
        (ARRAY['support-refunds', 'billing-credits', 'logistics-reroutes'])[1 + g %% 3] AS feature
    FROM (
        SELECT g, CASE WHEN g > %(decided)s - %(burst)s THEN 0.1 ELSE random() END AS r,
            CASE WHEN g > %(decided)s - %(burst)s
                 THEN now() - interval '23 hours' + (g - %(decided)s + %(burst)s)
                      * (interval '23 hours' / greatest(%(burst)s, 1)) - interval '1 minute'
                 ELSE now() - random() * %(days)s * interval '1 day' - interval '2 hours' END
                AS created
        FROM generate_series(1, %(decided)s) g
    ) drawn
) rows
ORDER BY created  -- rows arrive in time order, as they do in production
"""

PENDING = """
INSERT INTO approvals_proposal (
    id, service_id, action_type_id, payload, payload_hash, confidence, summary, rationale,
    model, prompt_version, feature, external_id, metadata, request_hash, state,
    decision_outcome, decided_by, decision_rule, decision_reason, rule_trace, created_at,
    updated_at, expires_at)
SELECT md5('q' || g)::uuid, (ARRAY[%(support)s, %(billing)s, %(logistics_svc)s])[1 + g %% 3],
    (ARRAY[%(refund)s, %(credit)s, %(shipment)s])[1 + g %% 3],
    jsonb_build_object('order_id', 'ORD-' || (900000 + g), 'amount',
        round((random() * 480 + 5)::numeric, 2), 'currency', 'EUR', 'reason', 'damaged'),
    md5(g::text) || md5('q' || g), round(random()::numeric, 3),
    'Pending order ORD-' || (900000 + g), 'Needs a look.', 'gpt-4o-mini', 'refunds@7',
    'support-refunds', 'ticket-q' || g, '{"channel": "email"}', '', 'pending_review', 'review',
    '', '', '', '[]', created, created, created + interval '24 hours'
FROM (SELECT g, now() - random() * interval '20 hours' AS created
      FROM generate_series(1, %(pending)s) g) drawn
ORDER BY created
"""

# received → routed/decided → the outcome (or the execution), each at its own time.
AUDIT = """
INSERT INTO approvals_auditevent (proposal_id, kind, from_state, to_state, actor, data, created_at)
SELECT p.id,
    CASE n WHEN 1 THEN 'proposal.received' WHEN 2 THEN 'proposal.routed'
           ELSE 'proposal.' || p.state END,
    CASE n WHEN 1 THEN '' WHEN 2 THEN 'received' ELSE 'pending_review' END,
    CASE n WHEN 1 THEN 'received' WHEN 2 THEN 'pending_review' ELSE p.state END,
    CASE n WHEN 3 THEN CASE p.decided_by WHEN 'rule' THEN 'rule:' || p.decision_rule
                                         WHEN 'reviewer' THEN 'user:reviewer' ELSE 'system' END
           ELSE 'service:bench' END,
    CASE n WHEN 3 THEN jsonb_build_object('reason', p.decision_reason) ELSE '{}' END,
    CASE n WHEN 1 THEN p.created_at WHEN 2 THEN p.created_at + interval '5 milliseconds'
           ELSE p.decided_at END
FROM approvals_proposal p CROSS JOIN generate_series(1, 3) n
WHERE p.decided_at IS NOT NULL
ORDER BY 7
"""

REVIEWS = """
INSERT INTO approvals_review (proposal_id, reviewer_id, verdict, comment, edited_payload,
    payload_hash, created_at)
SELECT id, decision_reviewer_id, decision_outcome, '', final_payload, payload_hash, decided_at
FROM approvals_proposal WHERE decided_by = 'reviewer'
ORDER BY decided_at
"""

# A fiftieth of the reviewer-decided proposals were audit samples rules would have approved.
AUDIT_SAMPLES = """
INSERT INTO insights_auditsample (proposal_id, action_type_id, fraction, rule, rule_version,
    created_at)
SELECT id, action_type_id, 0.02, 'auto-small', 1, created_at
FROM approvals_proposal WHERE decided_by = 'reviewer' AND ('x' || substr(id::text, 1, 2))::bit(8)::int < 5
"""

LLMCALLS = """
INSERT INTO llmcalls_llmcall (id, created_at, feature, route, service, provider, model, stream,
    messages, params, response_text, tool_calls, finish_reason, status, error_class,
    error_message, attempts, attempt_log, fallback_path, fell_back, cache_hit, over_budget,
    latency_ms, ttft_ms, input_tokens, output_tokens, cached_tokens, cost_usd, price_missing,
    provider_request_id, text_purged_at)
SELECT md5('c' || g)::uuid, created,
    (ARRAY['support-refunds', 'billing-credits', 'logistics-reroutes'])[1 + g %% 3],
    (ARRAY['support-refunds', 'billing-credits', 'logistics-reroutes'])[1 + g %% 3],
    (ARRAY['support-bot', 'billing-agent', 'logistics-agent'])[1 + g %% 3],
    (ARRAY['openai', 'anthropic'])[1 + g %% 2],
    (ARRAY['gpt-4o-mini', 'gpt-4o', 'claude-3-5-haiku'])[1 + (g / 5) %% 3], g %% 4 = 0,
    '[{"role": "user", "content": "Should order ORD-1 be refunded? It arrived late."}]', '{}',
    'Yes: refund 42.50 EUR.', NULL, 'stop',
    CASE WHEN g %% 37 = 0 THEN 'error' ELSE 'ok' END,
    CASE WHEN g %% 37 = 0 THEN 'Timeout' ELSE '' END, '',
    1, '[]', '[]', g %% 53 = 0, g %% 11 = 0, false,
    200 + random() * 1800, 80 + random() * 300, 300 + g %% 900, 40 + g %% 200, 0,
    round((random() * 0.004)::numeric, 8), g %% 101 = 0, 'req-' || g,
    CASE WHEN created < now() - interval '30 days' THEN created + interval '30 days' END
FROM (SELECT g, now() - random() * %(days)s * interval '1 day' AS created
      FROM generate_series(1, %(llmcalls)s) g) drawn
ORDER BY created
"""

EVALS = """
WITH eval_set AS (
    INSERT INTO evals_evalset (name, feature, description, scorer, scorer_config, created_at)
    VALUES ('growth-refunds', 'support-refunds', '', 'exact', '{}', now()) RETURNING id
), prompt AS (
    INSERT INTO evals_prompt (name, description, created_at)
    VALUES ('growth-refunds', '', now()) RETURNING id
), version AS (
    INSERT INTO evals_promptversion (prompt_id, version, template, route, params, created_at)
    SELECT id, 1, '[{"role": "user", "content": "{{ input }}"}]', 'support-refunds', '{}', now()
    FROM prompt RETURNING id
), cases AS (
    INSERT INTO evals_evalcase (eval_set_id, input, ideal, tags, split, source, fingerprint,
        created_at)
    SELECT eval_set.id, jsonb_build_object('order', g), '"approve"', '["late"]', 'dev', 'manual',
        md5('case' || g), now()
    FROM eval_set, generate_series(1, 1000) g RETURNING id
), runs AS (
    INSERT INTO evals_evalrun (eval_set_id, prompt_version_id, route, split, repeat, scorer,
        model_graded, batch, label, status, error, started_at, finished_at, n_cases, n_correct,
        accuracy, totals)
    SELECT eval_set.id, version.id, 'support-refunds', 'dev', 1, 'exact', false,
        md5('run' || g)::uuid, 'ci-' || g, 'finished', '', now() - g * interval '1 day',
        now() - g * interval '1 day' + interval '5 minutes', 1000, 900, 0.9, '{}'
    FROM eval_set, version, generate_series(1, greatest(%(evals)s / 1000, 1)) g RETURNING id
)
INSERT INTO evals_evalresult (run_id, case_id, attempt, output, score, passed, detail, error,
    latency_ms, cost_usd)
SELECT runs.id, cases.id, 0, 'approve', (random() < 0.9)::int, random() < 0.9, '', '',
    300 + random() * 500, 0.0004
FROM runs CROSS JOIN cases
LIMIT %(evals)s
"""

STEPS: list[tuple[str, str]] = [
    ("decided proposals", PROPOSALS),
    ("pending proposals", PENDING),
    ("audit events", AUDIT),
    ("reviews", REVIEWS),
    ("audit samples", AUDIT_SAMPLES),
    ("model calls", LLMCALLS),
    ("eval results", EVALS),
]
