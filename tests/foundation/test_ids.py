import time
import uuid
from collections.abc import Callable
from typing import Any

from foundation.ids import uuid7


def test_a_uuid7_is_version_7_of_rfc_9562_and_carries_the_millisecond_it_was_made() -> None:
    before = time.time_ns() // 1_000_000
    made = uuid7()
    after = time.time_ns() // 1_000_000

    assert made.version == 7
    assert made.variant == uuid.RFC_4122
    assert before <= made.int >> 80 <= after
    assert uuid.UUID(str(made)) == made


def test_ids_of_later_milliseconds_sort_after_earlier_ones_and_none_repeat() -> None:
    first = [uuid7() for _ in range(5_000)]
    time.sleep(0.002)
    later = [uuid7() for _ in range(5_000)]

    # PostgreSQL orders uuid values by their bytes, as Python orders them by their int.
    assert max(first) < min(later)
    assert len(set(first + later)) == 10_000
    # Within a millisecond the order is random: 74 of the 128 bits are.
    assert len({made.int & (1 << 62) - 1 for made in first}) == 5_000


def test_a_new_proposal_has_a_time_ordered_id(submit: Callable[..., Any]) -> None:
    earlier = submit()
    time.sleep(0.002)
    later = submit()

    assert (earlier.pk.version, later.pk.version) == (7, 7)
    assert earlier.pk < later.pk
