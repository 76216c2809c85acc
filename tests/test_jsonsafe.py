"""JSON from strangers: never a RecursionError, never deeper than the bound."""

from __future__ import annotations

import pytest

from gateway import jsonsafe
from gateway.errors import InvalidJson


@pytest.mark.parametrize("deep", ["[" * 1000 + "]" * 1000, '{"a":' * 5000 + "1" + "}" * 5000, "[" * 65 + "]" * 65])
def test_json_nested_past_the_bound_is_invalid_json_not_a_recursion_error(deep: str) -> None:
    with pytest.raises(InvalidJson, match="nested too deeply"):
        jsonsafe.loads(deep)
    with pytest.raises(InvalidJson):
        jsonsafe.loads_lenient(deep.encode())


def test_json_up_to_the_bound_parses() -> None:
    assert jsonsafe.depth(jsonsafe.loads("[" * 64 + "]" * 64)) == 64
    assert jsonsafe.loads(b'{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}


@pytest.mark.parametrize("body", [b"not json", b'{"a": "\xff"}', b"", b"\x00"])
def test_a_body_that_is_not_json_is_invalid_json_or_none_for_the_lenient_reader(body: bytes) -> None:
    with pytest.raises(InvalidJson, match="not valid JSON"):
        jsonsafe.loads(body)
    assert jsonsafe.loads_lenient(body) is None
