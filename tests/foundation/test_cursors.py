"""One cursor format for the API and the pages: a moment and an id, and nothing else accepted."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import pytest

from foundation import cursors


def test_a_cursor_names_its_moment_to_the_microsecond_and_its_id() -> None:
    moment = datetime(2026, 11, 29, 23, 59, 59, 999_999, tzinfo=UTC)
    pk = uuid.uuid4()
    text = cursors.encode(moment, pk)
    assert re.fullmatch(cursors.PATTERN, text)
    assert cursors.decode(text) == (moment, pk)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "2026-11-29T23:59:59+00:00~" + uuid.UUID(int=1).hex,  # the pages' former format
        "12-" + "g" * 32,
        "1" * 17 + "-" + "0" * 32,
        "-1-" + "0" * 32,
    ],
)
def test_anything_encode_could_not_have_written_is_no_position(text: str) -> None:
    assert cursors.decode(text) is None
