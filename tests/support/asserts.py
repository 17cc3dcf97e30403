"""Small assertion helpers shared by test modules."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pipeline.errors import BadInput


def bad_input(call: Callable[..., object], *args: object) -> BadInput:
    """The BadInput that `call(*args)` must raise (its reason and message are then checked)."""
    with pytest.raises(BadInput) as caught:
        call(*args)
    return caught.value
