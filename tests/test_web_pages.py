"""How pages put numbers into words, and errors into pages."""

from __future__ import annotations

import pytest

from gateway.errors import ServiceUnavailable
from gateway.web_pages import PAGE_HEADERS, duration, error_response


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


def test_an_error_on_a_page_is_a_page_with_the_errors_status_and_headers() -> None:
    response = error_response(ServiceUnavailable("Retry shortly", retry_after=7), back="/account")
    assert response.status == 503
    assert response.content_type == "text/html"
    assert response.headers["Retry-After"] == "7"
    assert response.headers["Content-Security-Policy"] == PAGE_HEADERS["Content-Security-Policy"]
    assert response.text is not None
    assert "Please try again shortly" in response.text
    assert 'href="/account"' in response.text
