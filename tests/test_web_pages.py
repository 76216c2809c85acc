"""How pages put numbers into words."""

from __future__ import annotations

import pytest

from gateway.web_pages import duration


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (-5, "0 s"),
        (0, "0 s"),
        (59, "59 s"),
        (60, "1 min"),
        (3599, "59 min"),
        (3600, "1 h"),
        (41033, "11 h 23 min"),
        (86400, "1 d"),
        (90000, "1 d 1 h"),
    ],
)
def test_a_wait_is_written_in_the_largest_units_that_fit(seconds: int, words: str) -> None:
    assert duration(seconds) == words
