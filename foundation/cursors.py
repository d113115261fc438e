"""One format for keyset-pagination cursors, in the API (`next_cursor`) and on the pages
(`?after=`): a position in a list ordered by (a moment, an id), written
`<microseconds since the epoch>-<the id's 32 hex digits>`.

Cursors are opaque to clients; any value of this shape is a position, so every cursor the
OpenAPI document calls valid (PATTERN) is accepted.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

PATTERN = r"^[0-9]{1,16}-[0-9a-f]{32}$"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def encode(moment: datetime, pk: uuid.UUID) -> str:
    return f"{(moment - _EPOCH) // _MICROSECOND}-{pk.hex}"


def decode(cursor: str) -> tuple[datetime, uuid.UUID] | None:
    """The position a cursor names, or None if it is not one `encode` could have written."""
    if re.fullmatch(PATTERN, cursor) is None:
        return None
    micros, pk = cursor.split("-")  # 16 digits at most: before the year 2287, never an overflow
    return _EPOCH + int(micros) * _MICROSECOND, uuid.UUID(hex=pk)
