"""`manage.py llmcalls tune_cache ROUTE --eval-set SET [--target 0.01]`.

Replays a labelled set of paraphrase pairs (JSON Lines: {"a": …, "b": …, "same": true|false},
`same` meaning the two questions have the same answer) through the route's embedding route, and
prints, per threshold, the hits, the wrong hits, precision, hit rate and the 95% upper bound on
the wrong-hit rate; then the lowest threshold whose bound is below the target. SET is a file, or
the name of a set shipped in llmcalls/evalsets/ (support_paraphrases: the demo's support
questions). Exit code 1 when no threshold meets the target.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from django.core.management.base import BaseCommand, CommandError, CommandParser

from llmcalls import client, routing, tuning
from llmcalls.errors import LLMError

SHIPPED = Path(__file__).resolve().parents[2] / "evalsets"


def _pairs(name: str) -> list[tuple[str, str, bool]]:
    path = Path(name)
    if not path.exists():
        path = SHIPPED / f"{name}.jsonl"
    if not path.exists():
        shipped = ", ".join(sorted(p.stem for p in SHIPPED.glob("*.jsonl")))
        raise CommandError(f"--eval-set {name!r}: no such file, nor a shipped set ({shipped})")
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            pair = (str(item["a"]), str(item["b"]), item["same"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CommandError(f"{path}:{number}: not a pair ({exc})") from None
        if not isinstance(pair[2], bool):
            raise CommandError(f"{path}:{number}: `same` must be true or false")
        pairs.append(pair)
    if not pairs:
        raise CommandError(f"{path}: no pairs")
    return pairs


class Command(BaseCommand):
    help = "Model calls: tune_cache (choose a semantic cache threshold with an error bound)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        tune = sub.add_parser("tune_cache", help="replay paraphrase pairs; pick a threshold")
        tune.add_argument("route", help="a route with a semantic_cache")
        tune.add_argument("--eval-set", required=True, help="a JSON Lines file or a shipped set")
        tune.add_argument(
            "--target", type=float, default=0.01, help="most wrong hits per hit (default 0.01)"
        )
        tune.add_argument("--low", type=float, default=0.80, help="lowest threshold tried")
        tune.add_argument("--step", type=float, default=0.01)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "tune_cache":
            self.tune_cache(**options)

    def tune_cache(
        self, *, route: str, eval_set: str, target: float, low: float, step: float, **_: Any
    ) -> None:
        if not 0 < target < 1:
            raise CommandError("--target must be between 0 and 1")
        if not 0 < step <= 0.5 or not 0 <= low < 1:
            raise CommandError("--low must be in [0, 1) and --step in (0, 0.5]")
        config = routing.route_for(route)
        if config is None or config.feature != route or config.semantic_cache is None:
            raise CommandError(f"route {route!r} does not exist or has no semantic_cache")
        pairs = _pairs(eval_set)
        texts = sorted({text for a, b, _ in pairs for text in (a, b)})
        vectors: dict[str, np.ndarray] = {}
        for text in texts:
            try:
                vectors[text] = np.asarray(
                    client.embed(
                        feature=route, text=text, route=config.semantic_cache.embedding_route
                    ).vector,
                    dtype=np.float32,
                )
            except LLMError as exc:
                raise CommandError(f"embedding failed: {exc.message}") from None
            vectors[text] /= np.linalg.norm(vectors[text]) or 1.0
        scored = [(float(vectors[a] @ vectors[b]), same) for a, b, same in pairs]
        thresholds = [round(t, 4) for t in np.arange(low, 1.0 + 1e-9, step)]
        rows = tuning.table(scored, thresholds)
        same = sum(1 for _, _, s in pairs if s)
        self.stdout.write(
            f"route {route}: {len(pairs)} pairs ({same} same answer, {len(pairs) - same} "
            f"different), {len(texts)} texts embedded via {config.semantic_cache.embedding_route}"
        )
        self.stdout.write(
            f"{'threshold':>9} {'hits':>6} {'wrong':>6} {'precision':>9} {'hit rate':>8} "
            f"{'wrong ≤ (95%)':>13}"
        )
        for row in rows:
            precision = f"{row.precision:.4f}" if row.precision is not None else "-"
            mark = "  ok" if row.meets(target) else ""
            self.stdout.write(
                f"{row.threshold:>9.2f} {row.hits:>6} {row.wrong:>6} {precision:>9} "
                f"{row.hit_rate:>8.3f} {row.wrong_upper:>13.4f}{mark}"
            )
        chosen = tuning.pick(rows, target)
        current = config.semantic_cache.threshold
        if chosen is None:
            raise CommandError(
                f"no threshold keeps the 95% upper bound on wrong hits below {target:g}"
                f" (the route's is {current:g}); label more pairs or raise --target"
            )
        self.stdout.write(
            f"chosen threshold: {chosen.threshold:.2f} (wrong hits ≤ {chosen.wrong_upper:.4f} at "
            f"95%, precision {chosen.precision:.4f}, hit rate {chosen.hit_rate:.3f}); "
            f"the route's is {current:g}"
        )
