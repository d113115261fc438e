#!/usr/bin/env bash
# The walkthrough of docs/evals.md, end to end, against the SIMULATED refund model.
# Needs DATABASE_URL (an empty or throwaway database) and SECRET_KEY set; uses port 18550.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export LOG_LEVEL=${LOG_LEVEL:-WARNING}

$PY -m evals.examples.serve --port 18550 --seconds 300 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null' EXIT
sleep 1

show() { echo; echo "\$ $*"; "$@"; echo "(exit status $?)"; }

$PY manage.py migrate --noinput -v 0
show $PY manage.py apply evals/examples/refund_eligibility.yaml
# The simulated models need prices for cost figures (the llmcalls admin, under Model prices).
$PY manage.py shell -v 0 -c '
from decimal import Decimal
from llmcalls.models import ModelPrice
for model, usd in [("sim-large", "2.00"), ("sim-small", "0.40"), ("sim-tiny", "0.10")]:
    ModelPrice.objects.get_or_create(model=model, defaults={
        "input_per_mtok": Decimal(usd), "output_per_mtok": Decimal(usd) * 4, "source": "demo"})'
show $PY manage.py evals import refund-eligibility evals/examples/refund_eligibility.jsonl
show $PY manage.py evals run refund-eligibility --prompt refund-eligibility@production
show $PY manage.py evals run refund-eligibility --prompt refund-eligibility@staging --baseline last
show $PY manage.py evals run refund-eligibility --prompt refund-eligibility@staging \
    --model evals-refunds-large --model evals-refunds-small --model evals-refunds-tiny
show $PY manage.py evals seal refund-eligibility
show $PY manage.py evals run refund-eligibility --prompt refund-eligibility@1 --split holdout --repeat 3
show $PY manage.py evals run refund-eligibility --prompt refund-eligibility@2 --split holdout --repeat 3 --baseline last
