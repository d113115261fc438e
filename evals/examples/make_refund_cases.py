"""Regenerate refund_eligibility.jsonl (deterministic): `python -m evals.examples.make_refund_cases`.

The ideal answer is the written policy (the `policy` of refund_model with every clause known).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from evals.examples.refund_model import CLAUSES, policy

ITEMS = {
    "changed_mind": ["wool scarf", "desk lamp", "running shoes", "phone case", "yoga mat"],
    "damaged": ["ceramic vase", "glass teapot", "monitor", "picture frame", "headphones"],
    "late_delivery": ["birthday cake topper", "printer ink", "winter coat", "board game"],
    "wrong_item": ["blue kettle", "size M jacket", "USB-C cable", "coffee grinder"],
    "final_sale": ["clearance sofa cushion", "outlet handbag", "last-season boots"],
    "digital": ["e-book", "photo editor licence", "music album download", "online course"],
}
MESSAGES = {
    "changed_mind": "I changed my mind and would like my money back.",
    "damaged": "It arrived broken. Can I get a refund?",
    "late_delivery": "This came much later than promised.",
    "wrong_item": "You sent me the wrong thing.",
    "final_sale": "I don't want it any more, please refund.",
    "digital": "I bought this by mistake.",
}
# Days since delivery per category for the dev cases (8 each) and the holdout (2 each).
DAYS = {
    "changed_mind": ([3, 12, 25, 29, 31, 40, 8, 18], [14, 35]),
    "damaged": ([5, 20, 35, 44, 52, 61, 75, 88], [10, 70]),
    "late_delivery": ([2, 4, 6, 9, 11, 15, 20, 25], [3, 7]),
    "wrong_item": ([4, 15, 33, 45, 58, 62, 70, 10], [20, 65]),
    "final_sale": ([3, 7, 12, 18, 22, 28, 35, 44], [9, 40]),
    "digital": ([2, 5, 9, 13, 16, 21, 27, 10], [6, 20]),
}


def main() -> None:
    rng = random.Random(7)
    system = " ".join(CLAUSES.values())
    lines = []
    number = 1000
    for category, (dev, holdout) in DAYS.items():
        for split, days_list in (("dev", dev), ("holdout", holdout)):
            for days in days_list:
                number += 1
                opened = category == "changed_mind" and rng.random() < 0.35
                downloaded = category == "digital" and rng.random() < 0.4
                late = rng.randint(0, 8) if category == "late_delivery" else 0
                amount = round(rng.uniform(8, 400), 2)
                variables = {
                    "order_id": f"ORD-{number}",
                    "item": rng.choice(ITEMS[category]),
                    "amount": f"{amount:.2f}",
                    "category": category,
                    "days": str(days),
                    "late": str(late),
                    "opened": "yes" if opened else "no",
                    "downloaded": "yes" if downloaded else "no",
                    "message": MESSAGES[category],
                }
                facts = {
                    "category": category,
                    "days": days,
                    "late": late,
                    "opened": opened,
                    "downloaded": downloaded,
                }
                eligible, _ = policy(facts, system)
                tags = [category] + (["high_value"] if amount >= 200 else [])
                case = {
                    "input": variables,
                    "ideal": {"eligible": eligible},
                    "tags": tags,
                    "split": split,
                }
                lines.append(json.dumps(case))
    path = Path(__file__).with_name("refund_eligibility.jsonl")
    path.write_text("\n".join(lines) + "\n")
    print(f"{len(lines)} cases written to {path}")


if __name__ == "__main__":
    main()
