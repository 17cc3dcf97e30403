"""The inference service's rules: sampling checked against the caps, stop strings found in
text arriving in pieces, the model table and its `latest` alias, and how often a stream's
pieces go out."""

from __future__ import annotations

from typing import Any

import pytest

from services.inference.core import (
    InvalidArgument,
    Limits,
    Model,
    Models,
    NotFound,
    StopMatcher,
    check_prompt,
    sampling,
)
from services.inference.server import InferenceService

pytestmark = pytest.mark.unit

LIMITS = Limits(max_prompt_tokens=100, max_tokens=64, default_max_tokens=16)


def test_unset_fields_take_the_defaults_and_bad_ones_are_named() -> None:
    chosen = sampling(LIMITS)
    assert (chosen.max_tokens, chosen.temperature, chosen.top_p, chosen.greedy) == (
        16, 0.0, 1.0, True)  # fmt: skip
    for values, message in [
        ({"max_tokens": 65}, "max_tokens 65 is over this server's cap of 64"),
        ({"temperature": 2.5}, "temperature must be within"),
        ({"top_p": 1.5}, "top_p must be within"),
        ({"stop": ("",)}, "stop strings must be 1 to 64"),
        ({"stop": tuple("abcdefghi")}, "at most 8 stop strings"),
    ]:
        with pytest.raises(InvalidArgument, match=message):
            sampling(LIMITS, **values)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="101 tokens, over this server's cap of 100"):
        check_prompt(101, LIMITS)
    with pytest.raises(InvalidArgument, match="empty"):
        check_prompt(0, LIMITS)


def feed(matcher: StopMatcher, pieces: list[str]) -> tuple[str, bool]:
    shown = ""
    for piece in pieces:
        text, stopped = matcher.feed(piece)
        shown += text
        if stopped:
            return shown, True
    return shown + matcher.flush(), False


def test_a_stop_string_split_across_pieces_is_found_and_never_shown() -> None:
    assert feed(StopMatcher(("END",)), ["Once up", "on E", "N", "D and more"]) == (
        "Once upon ", True)  # fmt: skip
    # Text that only looked like the start of one is shown once it is clear.
    matcher = StopMatcher(("END",))
    assert matcher.feed("an E") == ("an ", False)
    assert matcher.feed("Nd") == ("ENd", False)
    assert feed(StopMatcher(("\n\n", "###")), ["a\n", "b#", "#", "#c"]) == ("a\nb", True)
    assert feed(StopMatcher(()), ["all ", "of it"]) == ("all of it", False)
    assert feed(StopMatcher(("xyz",)), ["ends with xy"]) == ("ends with xy", False)


def test_latest_follows_promotions_and_names_are_checked() -> None:
    models = Models(Model("base", "base", "stories"))
    assert models.resolve("").name == "base"
    with pytest.raises(NotFound, match="no adapter has been promoted yet"):
        models.resolve("latest")
    models.add(Model("ckpt-1", "adapter", "stories"), make_latest=True)
    models.add(Model("ckpt-2", "adapter", "stories"), make_latest=False)
    assert models.resolve("").name == models.resolve("latest").name == "ckpt-1"
    assert [(m.name, a) for m, a in models.listing()] == [
        ("base", []), ("ckpt-1", ["latest"]), ("ckpt-2", [])]  # fmt: skip
    models.remove("ckpt-1")
    assert models.resolve("").name == "base"
    with pytest.raises(NotFound, match="no model 'ckpt-1': base, ckpt-2"):
        models.resolve("ckpt-1")
    for reserved in ("base", "latest", "__base__"):
        with pytest.raises(InvalidArgument, match="reserved"):
            models.add(Model(reserved, "adapter", "stories"), make_latest=False)


def test_many_streams_share_the_servers_message_budget() -> None:
    nothing: Any = None  # the interval needs no engine, models or adapters
    service = InferenceService(nothing, nothing, nothing, LIMITS, 64, stream_interval_s=0.02,
                               stream_messages_per_s=500)  # fmt: skip
    for streams, interval in ((0, 0.02), (1, 0.02), (10, 0.02), (32, 0.064), (64, 0.128)):
        service.in_flight = streams
        assert service.stream_interval() == pytest.approx(interval)
    service.stream_messages_per_s = 0  # no budget: the interval alone
    assert service.stream_interval() == 0.02
