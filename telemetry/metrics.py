"""Every Prometheus metric Gatehouse exports is declared here, and only here.

Two kinds:
- Counters and histograms, updated by the code where the event happens (`metrics.X.labels(…)`).
  With several processes (uvicorn workers, Celery prefork children) each process writes its
  values to its own memory-mapped file under PROMETHEUS_MULTIPROC_DIR and the /metrics view adds
  them up (prometheus-client's multiprocess mode): an increment is a write to local memory, with
  no network round trip on the submit path (bench/README.md has the measurement that chose it).
- Gauges of what the database holds now (queue depth, outbox backlog, brakes…), read when
  Prometheus scrapes: one indexed query each, listed in SCRAPE_GAUGES by the dotted path of the
  selector that answers it, so that this module imports no app (apps import it).

To add a metric: declare it below (name `gatehouse_…`, a help text, few labels with bounded
values), update it where the event happens, and list it in README.md "Metrics".
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# Latency buckets (seconds) for requests handled in milliseconds.
_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# From a submission to its decision: from instant (a rule) to days (a reviewer, expiry).
_WAIT = (1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0, 7 * 86400.0)
# Model calls: hundreds of milliseconds to a minute.
_MODEL = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)

# --- proposals -------------------------------------------------------------------------------
PROPOSALS_SUBMITTED = Counter(
    "gatehouse_proposals_submitted",
    "New proposals recorded (idempotent replays are not counted)",
    ["action_type"],
)
PROPOSALS_DECIDED = Counter(
    "gatehouse_proposals_decided",
    "Proposals decided, by who decided: rule, policy (no rule matched or fail-closed), "
    "reviewer, expiry, cancel (withdrawn by the service)",
    ["action_type", "decided_by", "outcome"],
)
SUBMIT_SECONDS = Histogram(
    "gatehouse_submit_duration_seconds",
    "Time to handle POST /api/v1/proposals inside the application (authentication done)",
    buckets=_FAST,
)
TIME_TO_DECISION_SECONDS = Histogram(
    "gatehouse_time_to_decision_seconds",
    "From submission to decision",
    ["action_type", "decided_by"],
    buckets=_WAIT,
)

REVIEW_SLA_BREACHES = Counter(
    "gatehouse_review_sla_breaches",
    "Proposals whose review SLA passed while they waited (each escalated once)",
    ["action_type"],
)

# --- execution ---------------------------------------------------------------------------------
DELIVERY_ATTEMPTS = Counter(
    "gatehouse_delivery_attempts",
    "Attempts to deliver an outbox message: kind execute (webhook or callable executor), "
    "callback (decision callback) or webhook (an app's own, no proposal: insights alerts); "
    "result succeeded, retry (failed, will retry) or failed (failed, given up)",
    ["kind", "result"],
)
EXECUTIONS_FAILED = Counter(
    "gatehouse_executions_failed",
    "Approved proposals whose execution failed for good",
    ["action_type"],
)

# --- model calls (llmcalls) ------------------------------------------------------------------
MODEL_CALLS = Counter(
    "gatehouse_model_calls",
    "Model calls (one per logical call, retries and fallbacks included) by status ok, error or refused",
    ["feature", "model", "status"],
)
MODEL_CALL_SECONDS = Histogram(
    "gatehouse_model_call_duration_seconds",
    "Latency of a model call, retries and fallbacks included",
    ["feature", "model"],
    buckets=_MODEL,
)
MODEL_TOKENS = Counter(
    "gatehouse_model_tokens",
    "Tokens of model calls by direction input or output",
    ["feature", "model", "direction"],
)
MODEL_COST_USD = Counter(
    "gatehouse_model_cost_usd",
    "What model calls cost, in US dollars (calls without a known price add nothing)",
    ["feature", "model"],
)
MODEL_CACHE_HITS = Counter(
    "gatehouse_model_cache_hits",
    "Model calls answered from the exact cache",
    ["feature", "model"],
)

# --- read at scrape time ---------------------------------------------------------------------
# Gauge name → (help, labels). Their values come from the functions of SCRAPE_QUERIES.
SCRAPE_GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "gatehouse_pending_proposals": ("Proposals waiting for a reviewer", ("action_type",)),
    "gatehouse_pending_oldest_age_seconds": (
        "Age of the oldest proposal waiting for a reviewer",
        ("action_type",),
    ),
    "gatehouse_outbox_backlog": (
        "Outbox messages (executions, callbacks, alert webhooks) not yet delivered",
        ("kind",),
    ),
    "gatehouse_outbox_oldest_age_seconds": (
        "Age of the oldest outbox message not yet delivered",
        ("kind",),
    ),
    "gatehouse_model_circuit_open": (
        "1 for each provider/model whose circuit breaker is open now",
        ("target",),
    ),
    "gatehouse_brakes_engaged": (
        "1 for each action type whose automatic approval the brake has stopped",
        ("action_type",),
    ),
    "gatehouse_open_alerts": ("Insight alerts (drift, brake) not yet acknowledged", ("kind",)),
}
# Dotted paths of functions returning [(gauge name, label values, value), …], each with one
# query behind an index. Imported when /metrics is scraped, so this module imports no app.
SCRAPE_QUERIES: tuple[str, ...] = (
    "approvals.selectors.metrics_pending",
    "approvals.selectors.metrics_outbox",
    "llmcalls.breaker.metrics_open_circuits",
    "insights.selectors.metrics_brakes_and_alerts",
)
