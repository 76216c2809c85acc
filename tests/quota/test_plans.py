"""What a JSON-RPC message costs, and plans scaled for the degraded per-replica limiter."""

from __future__ import annotations

import pytest

from gateway.quota import Plan, message_cost, scale_plan
from gateway.quota.plans import FREE

WEIGHTED = Plan("pro", per_minute=600, tools_call_weight=5)


def request(method: str, id_: object = 1) -> dict[str, object]:
    return {"jsonrpc": "2.0", "id": id_, "method": method, "params": {}}


@pytest.mark.parametrize(
    ("message", "cost"),
    [
        (request("initialize"), 1),
        (request("tools/list"), 1),
        (request("tools/call"), 5),
        (request("resources/read", id_="abc"), 1),
        (request("ping", id_=None), 1),  # an id of null is still a request
        ({"jsonrpc": "2.0", "method": "notifications/initialized"}, 0),
        ({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}, 0),
        ({"jsonrpc": "2.0", "id": 7, "result": {}}, 0),
        ({"jsonrpc": "2.0", "id": 7, "error": {"code": -1, "message": "no"}}, 0),
        ([request("tools/call", 1), request("tools/list", 2), {"jsonrpc": "2.0", "method": "notifications/x"}], 6),
        ([], 0),
        ({"jsonrpc": "2.0", "id": 1}, 1),  # neither request nor response: charged, never free
        ("not json-rpc", 1),
        (None, 1),
    ],
)
def test_a_message_costs_one_per_request_tools_call_its_weight_notifications_and_responses_nothing(
    message: object, cost: int
) -> None:
    assert message_cost(message, WEIGHTED) == cost


def test_tools_call_costs_one_by_default() -> None:
    assert message_cost(request("tools/call"), FREE) == 1


def test_a_scaled_plan_is_rounded_down_floored_and_never_above_the_cap() -> None:
    plan = Plan("p", per_minute=60, per_day=1000, per_month=None, tools_call_weight=3)
    assert scale_plan(plan, 1 / 3) == Plan("p", per_minute=20, per_day=333, per_month=None, tools_call_weight=3)
    assert scale_plan(Plan("p", per_minute=2), 0.1).per_minute == 1
    assert scale_plan(Plan("p", per_minute=2), 0.1, min_limit=5).per_minute == 2
    assert scale_plan(Plan("p", per_minute=7), 1.0).per_minute == 7


def test_a_scaled_unlimited_plan_stays_unlimited_and_a_share_must_be_a_fraction() -> None:
    assert scale_plan(Plan("u"), 0.5).unlimited
    with pytest.raises(ValueError, match="share"):
        scale_plan(FREE, 0)
    with pytest.raises(ValueError, match="share"):
        scale_plan(FREE, 1.5)


def test_a_plan_lists_its_capped_windows_shortest_first() -> None:
    assert list(Plan("p", per_month=5, per_minute=1).limits()) == [("minute", 1), ("month", 5)]
    assert list(Plan("u").limits()) == []
