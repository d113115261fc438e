from __future__ import annotations

import socket
import time
from collections.abc import Callable
from decimal import Decimal

import httpx2
import pytest

from llmcalls import client, transport
from llmcalls.models import LLMCall
from tests.llmcalls.conftest import MESSAGES
from tests.llmcalls.fake_provider import FakeProvider

pytestmark = pytest.mark.django_db

Route = Callable[..., None]


def test_a_stream_yields_deltas_measures_ttft_and_takes_usage_from_the_last_chunk(
    fake: FakeProvider, make_route: Route, prices: None
) -> None:
    make_route("support", "primary/m")
    fake.script("primary", "m", "delay:0.3")

    started = time.monotonic()
    stream = client.stream(feature="support", messages=MESSAGES)
    pieces = [delta.text for delta in stream]

    assert "".join(pieces) == "Hello from the fake provider."
    assert pieces[:2] == ["Hello", " from"]
    assert fake.requests[0].body["stream_options"] == {"include_usage": True}
    result = stream.result
    assert result is not None and result.finish_reason == "stop"
    assert (
        result.ttft_ms is not None and 300 <= result.ttft_ms < (time.monotonic() - started) * 1000
    )
    call = LLMCall.objects.get(id=stream.call_id)
    assert call.stream and call.status == "ok"
    assert call.response_text == "Hello from the fake provider."
    assert call.ttft_ms == result.ttft_ms
    assert (call.input_tokens, call.output_tokens) == (12, 7)
    assert call.cost_usd is None  # "m" has no price: unknown, not zero
    assert call.price_missing


def test_a_priced_stream_is_costed(fake: FakeProvider, make_route: Route, prices: None) -> None:
    make_route("support", "primary/ok")
    stream = client.stream(feature="support", messages=MESSAGES)
    list(stream)
    assert LLMCall.objects.get(id=stream.call_id).cost_usd == Decimal("0.026")


def test_a_stream_cut_midway_is_an_error_never_a_short_success(
    fake: FakeProvider, make_route: Route
) -> None:
    make_route("support", "primary/cut", "backup/ok")

    stream = client.stream(feature="support", messages=MESSAGES)
    received: list[str] = []
    with pytest.raises(client.StreamCut) as caught:
        for delta in stream:
            received.append(delta.text)

    assert "".join(received) == "Hello from"
    assert fake.tried() == ["primary/cut"]  # no fallback after the first token
    assert stream.result is None
    call = LLMCall.objects.get(id=stream.call_id)
    assert call.id == caught.value.call_id
    assert call.status == "error" and call.error_class == "StreamCut"
    assert call.response_text == "Hello from"
    assert "incomplete chunked read" in call.error_message


def test_a_stream_falls_back_before_the_first_token(fake: FakeProvider, make_route: Route) -> None:
    make_route("support", "primary/500", "backup/ok")

    stream = client.stream(feature="support", messages=MESSAGES)

    assert "".join(d.text for d in stream) == "Hello from the fake provider."
    assert fake.tried() == ["primary/500"] * 3 + ["backup/ok"]
    call = LLMCall.objects.get(id=stream.call_id)
    assert call.provider == "backup" and call.fell_back


def test_a_stream_cut_before_its_first_token_is_retried_then_falls_back(
    fake: FakeProvider, make_route: Route
) -> None:
    make_route("support", "primary/m", "backup/ok")
    fake.script("primary", "m", "cut:0", "cut:0", "cut:0")

    stream = client.stream(feature="support", messages=MESSAGES)

    assert "".join(d.text for d in stream) == "Hello from the fake provider."
    assert fake.tried() == ["primary/m"] * 3 + ["backup/ok"]


def test_the_deadline_holds_mid_stream(fake: FakeProvider, make_route: Route) -> None:
    make_route("support", "primary/stall", deadline=1)

    started = time.monotonic()
    stream = client.stream(feature="support", messages=MESSAGES)
    with pytest.raises(client.DeadlineExceeded):
        list(stream)

    assert 1.0 <= time.monotonic() - started < 1.3
    call = LLMCall.objects.get(id=stream.call_id)
    assert call.error_class == "DeadlineExceeded" and call.response_text == "Hello from"


def test_a_stream_that_hangs_before_its_first_token_falls_back_within_the_deadline(
    fake: FakeProvider, make_route: Route
) -> None:
    make_route("support", "primary/hang", "backup/ok", deadline=1)

    started = time.monotonic()
    with pytest.raises(client.DeadlineExceeded):
        client.stream(feature="support", messages=MESSAGES)
    assert time.monotonic() - started < 1.3
    assert LLMCall.objects.get().status == "error"


def test_a_caller_that_stops_reading_is_logged_as_a_cut(
    fake: FakeProvider, make_route: Route
) -> None:
    make_route("support", "primary/ok")

    stream = client.stream(feature="support", messages=MESSAGES)
    next(iter(stream))
    stream.close()

    call = LLMCall.objects.get(id=stream.call_id)
    assert call.status == "error" and call.error_class == "StreamCut"
    assert "stopped reading" in call.error_message


def test_a_stream_dropped_unread_is_still_logged(fake: FakeProvider, make_route: Route) -> None:
    make_route("support", "primary/ok")

    with client.stream(feature="support", messages=MESSAGES) as stream:
        call_id = stream.call_id

    call = LLMCall.objects.get(id=call_id)
    assert call.status == "error" and call.error_class == "StreamClosed"


def test_a_whole_stream_is_cached_and_replayed(fake: FakeProvider, make_route: Route) -> None:
    make_route("support", "primary/ok", cache_ttl=60)

    first = client.stream(feature="support", messages=MESSAGES)
    list(first)
    second = client.stream(feature="support", messages=MESSAGES)
    text = "".join(d.text for d in second)
    completed = client.complete(feature="support", messages=MESSAGES)

    assert text == "Hello from the fake provider." == completed.text
    assert len(fake.requests) == 1
    assert second.cache_hit and completed.cache_hit
    hit = LLMCall.objects.get(id=second.call_id)
    assert hit.cache_hit and hit.cost_usd == 0 and hit.status == "ok"


def test_a_cut_stream_is_not_cached(fake: FakeProvider, make_route: Route) -> None:
    make_route("support", "primary/m", cache_ttl=60)
    fake.script("primary", "m", "cut")
    with pytest.raises(client.StreamCut):
        list(client.stream(feature="support", messages=MESSAGES))

    again = client.stream(feature="support", messages=MESSAGES)
    list(again)
    assert not again.cache_hit and len(fake.requests) == 2


def _shut(sock: socket.socket) -> bool:
    """Whether the watchdog shut this socket down (its peer reads the end at once)."""
    sock.settimeout(0.01)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False


def test_the_watchdog_cuts_each_stream_at_its_own_deadline_and_never_a_cancelled_one() -> None:
    watchdog = client._Watchdog()
    pairs = [socket.socketpair() for _ in range(3)]
    late, early, cancelled = (
        httpx2.Response(200, extensions={"network_stream": transport.Network(ours)})
        for ours, _ in pairs
    )
    now = time.monotonic()
    watchdog.watch(now + 30, late)
    cancel = watchdog.watch(now + 0.2, cancelled)
    watchdog.watch(now + 0.4, early)  # earlier than the first: the sleeping thread must wake
    watchdog.cancel(cancel)
    time.sleep(0.1)
    assert not any(_shut(theirs) for _, theirs in pairs)
    deadline = time.monotonic() + 2
    while not _shut(pairs[1][1]):
        assert time.monotonic() < deadline, "the earlier deadline was missed"
    assert time.monotonic() - now >= 0.4
    assert not _shut(pairs[0][1]) and not _shut(pairs[2][1])
    for ours, theirs in pairs:
        ours.close()
        theirs.close()


@pytest.mark.parametrize("ends", [[b"\n"], [b"\r\n"], [b"\r"], [b"\r\n", b"\n", b"\r"]])
def test_event_lines_end_in_lf_crlf_or_cr_however_the_chunks_split_them(
    ends: list[bytes],
) -> None:
    lines = [
        b'data: {"a": 1}',
        b"",
        b": comment",
        b"data: x\xe2\x80\xa8y",
        b"",
        b"data: [DONE]",
        b"",
    ]
    stream = b"".join(line + ends[i % len(ends)] for i, line in enumerate(lines))
    for first in range(len(stream) + 1):
        for second in range(first, len(stream) + 1):
            chunks = [stream[:first], stream[first:second], stream[second:]]
            assert list(client._lines(chunks)) == lines, (first, second)
