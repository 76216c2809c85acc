"""The RateLimit-Policy / RateLimit fields (draft-ietf-httpapi-ratelimit-headers-11), Retry-After, and the 429."""

from __future__ import annotations

import json
import re

from gateway.errors import render
from gateway.quota import Decision, QuotaExceeded, WindowState, quota_headers
from gateway.quota.headers import policy_field, ratelimit_field

# An RFC 9651 List of Items whose bare item is a String and whose parameters are Integers.
_ITEM = r'"[a-z]+"(?:;[a-z][a-z0-9_.*-]*=\d{1,15})+'
_SF_LIST = re.compile(rf"^{_ITEM}(?:, {_ITEM})*$")

MINUTE = WindowState(window="minute", limit=60, remaining=12, reset_seconds=30, used=48)
DAY = WindowState(window="day", limit=1000, remaining=940, reset_seconds=41_233, used=60)
MONTH = WindowState(window="month", limit=20_000, remaining=19_000, reset_seconds=900_000, used=1000)


def parse(field: str) -> dict[str, dict[str, int]]:
    assert _SF_LIST.match(field), field
    items: dict[str, dict[str, int]] = {}
    for item in field.split(", "):
        name, *params = item.split(";")
        items[name.strip('"')] = {k: int(v) for k, v in (p.split("=") for p in params)}
    return items


def test_an_admitted_request_carries_the_policy_and_the_service_limit_of_every_window() -> None:
    headers = quota_headers(Decision(allowed=True, retry_after=0, limits=[MINUTE, DAY]))
    assert headers == {
        "RateLimit-Policy": '"minute";q=60;w=60, "day";q=1000;w=86400',
        "RateLimit": '"minute";r=12;t=30, "day";r=940;t=41233',
    }


def test_the_fields_are_structured_field_lists_of_named_items() -> None:
    limits = [MINUTE, DAY, MONTH]
    assert parse(policy_field(limits)) == {
        "minute": {"q": 60, "w": 60},
        "day": {"q": 1000, "w": 86_400},
        "month": {"q": 20_000, "w": 2_592_000},
    }
    assert parse(ratelimit_field(limits)) == {
        "minute": {"r": 12, "t": 30},
        "day": {"r": 940, "t": 41_233},
        "month": {"r": 19_000, "t": 900_000},
    }


def test_a_refusal_adds_retry_after_no_earlier_than_the_windows_that_refused() -> None:
    exhausted = WindowState(window="minute", limit=60, remaining=0, reset_seconds=30, used=60)
    headers = quota_headers(Decision(allowed=False, retry_after=30, limits=[exhausted, DAY]))
    assert headers["Retry-After"] == "30"
    assert parse(headers["RateLimit"])["minute"] == {"r": 0, "t": 30}


def test_retry_after_is_at_least_one_second() -> None:
    assert quota_headers(Decision(allowed=False, retry_after=0, limits=[MINUTE]))["Retry-After"] == "1"


def test_an_unlimited_plan_gets_no_ratelimit_fields() -> None:
    assert quota_headers(Decision(allowed=True, retry_after=0, limits=[])) == {}


def test_quota_exceeded_is_a_429_json_rpc_error_with_retry_after_and_ratelimit_fields() -> None:
    exhausted = WindowState(window="minute", limit=60, remaining=0, reset_seconds=30, used=60)
    decision = Decision(allowed=False, retry_after=30, limits=[exhausted, DAY])
    response = render(QuotaExceeded(decision))
    assert response.status == 429
    assert response.headers["Retry-After"] == "30"
    assert response.headers["RateLimit"] == '"minute";r=0;t=30, "day";r=940;t=41233'
    assert response.headers["RateLimit-Policy"] == '"minute";q=60;w=60, "day";q=1000;w=86400'
    assert response.headers["Cache-Control"] == "no-store"
    assert response.body is not None
    body = json.loads(response.body)  # type: ignore[arg-type]
    assert body["jsonrpc"] == "2.0"
    assert body["error"]["message"] == "Quota exceeded for this account (60 per minute); retry in 30 s"


def test_quota_exceeded_names_only_the_windows_the_cost_did_not_fit() -> None:
    minute = WindowState(window="minute", limit=60, remaining=4, reset_seconds=30, used=56)
    day = WindowState(window="day", limit=1000, remaining=2, reset_seconds=600, used=998)
    error = QuotaExceeded(Decision(allowed=False, retry_after=600, limits=[minute, day]), cost=3)
    assert error.description == "Quota exceeded for this account (1000 per day); retry in 600 s"
