"""Client addresses as the address-based limits count them."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from gateway.config import ConfigError, parse_config
from gateway.net import address_bucket, client_address, is_trusted


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


def _request(peer: str, *forwarded: str) -> web.Request:
    headers = CIMultiDict(("X-Forwarded-For", line) for line in forwarded)
    return make_mocked_request("GET", "/", headers=headers, transport=_Transport(peer))


class _Transport:
    def __init__(self, peer: str) -> None:
        self.peer = peer

    def get_extra_info(self, name: str, default: object = None) -> object:
        return (self.peer, 1234) if name == "peername" else default


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "client"),
    [
        # A trusted range (a pod network): the last hop it appended is the client's.
        ("10.2.3.4", ["198.51.100.7"], ["10.0.0.0/8"], "198.51.100.7"),
        # A chain of trusted proxies (cloud load balancer, then ingress): their own hops are skipped.
        ("10.2.3.4", ["198.51.100.7, 10.9.9.9"], ["10.0.0.0/8"], "198.51.100.7"),
        # What a client wrote before the trusted hops is never believed.
        ("10.2.3.4", ["203.0.113.66, 198.51.100.7"], ["10.0.0.0/8"], "198.51.100.7"),
        # An untrusted peer's header is ignored.
        ("192.0.2.9", ["198.51.100.7"], ["10.0.0.0/8"], "192.0.2.9"),
        # Exact addresses still work, IPv6 ranges too.
        ("192.0.2.1", ["198.51.100.7"], ["192.0.2.1"], "198.51.100.7"),
        ("2001:db8::5", ["198.51.100.7"], ["2001:db8::/32"], "198.51.100.7"),
    ],
)
def test_trusted_proxies_may_be_cidr_ranges_and_a_chain_of_them_is_skipped(
    peer: str, forwarded: list[str], trusted: list[str], client: str
) -> None:
    assert client_address(_request(peer, *forwarded), frozenset(trusted)) == client


def test_a_trusted_proxy_that_is_neither_an_address_nor_a_range_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match=r"security.trusted_proxies\[0\]: expected an IP address or a CIDR range"):
        parse_config({"security": {"trusted_proxies": ["lb.internal"]}})
    assert is_trusted(
        "10.1.2.3", parse_config({"security": {"trusted_proxies": ["10.0.0.0/8"]}}).security.trusted_proxies
    )
