"""Client addresses as the address-based limits count them."""

from __future__ import annotations

import pytest

from gateway.net import address_bucket


@pytest.mark.parametrize(
    ("address", "bucket"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("unknown", "unknown"),
    ],
)
def test_an_ipv6_client_is_counted_by_its_64_and_an_ipv4_one_by_its_address(address: str, bucket: str) -> None:
    assert address_bucket(address) == bucket
