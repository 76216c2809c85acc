"""The outside checks of ``mcp-gateway doctor``: what MCP clients see at ``public_url``."""

from __future__ import annotations

import email.utils
import json
from urllib.parse import urlsplit

from gateway.doctor.base import (
    DATE_HEADER_SLACK,
    NETWORK_ERRORS,
    RESOURCE_METADATA,
    Checks,
    Fetched,
    duration,
    error_name,
    is_loopback,
    origin,
)


class OutsideChecks(Checks):
    def check_public_url(self) -> None:
        parts = urlsplit(self.config.public_url)
        host = parts.hostname or ""
        if parts.scheme == "https" or is_loopback(host):
            self._add("public_url", "ok", f"{self.config.public_url} ({parts.scheme})")
            return
        self._add(
            "public_url",
            "fail",
            f"public_url {self.config.public_url} is plain http on a non-loopback host: passwords, codes and "
            "tokens would cross the network in clear, and MCP clients refuse such an authorization server",
            "serve the gateway over https (a TLS-terminating front proxy) and set public_url to the https URL",
        )

    async def check_reachable(self) -> bool:
        url = self.config.public_url + "/healthz"
        try:
            sent = self.clock.now()
            fetched = await self._fetch("GET", url)
            received = self.clock.now()
        except NETWORK_ERRORS as exc:
            self._add(
                "reachable",
                "fail",
                f"{url} is not reachable ({error_name(exc)})",
                "start the gateway, or fix public_url / the front proxy so that public_url reaches it",
            )
            return False
        # The liveness body, not the Server header: front proxies (nginx by default) replace that one.
        if fetched.status != 200 or not _is_liveness(fetched):
            self._add(
                "reachable",
                "fail",
                f"{url} answered {fetched.status} but not as this gateway",
                "public_url must be the URL at which clients reach this gateway (check the front proxy's routes)",
            )
            return False
        self._add("reachable", "ok", f"{url} answers")
        self._check_date_header(fetched.headers.get("Date"), sent, received)
        return True

    def _check_date_header(self, value: str | None, sent: float, received: float) -> None:
        if not value:
            return
        try:
            their_time = email.utils.parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            return
        allowance = self.config.security.max_clock_skew + DATE_HEADER_SLACK
        if sent - allowance <= their_time <= received + allowance:
            self._add("clock", "ok", "this machine's clock agrees with the gateway's")
            return
        self._add(
            "clock",
            "fail",
            f"the gateway's clock differs from this machine's by about {duration(their_time - sent)} "
            f"(more than security.max_clock_skew, {self.config.security.max_clock_skew:g} s): tokens will be "
            "taken as expired or accepted too long",
            "run NTP (chrony, systemd-timesyncd) on every host",
        )

    async def check_discovery(self) -> None:
        """What MCP clients do: the 401 challenge, protected-resource metadata, authorization-server metadata."""
        public = self.config.public_url
        resource = public + "/mcp"
        ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        try:
            challenge = await self._fetch("POST", resource, data=json.dumps(ping), headers=headers)
        except NETWORK_ERRORS as exc:
            self._add("challenge", "fail", f"POST {resource} failed ({error_name(exc)})")
            return
        found = RESOURCE_METADATA.search(challenge.headers.get("WWW-Authenticate", ""))
        if challenge.status != 401 or found is None:
            self._add(
                "challenge",
                "fail",
                f"POST {resource} without a credential answered {challenge.status} without an RFC 9728 "
                "challenge: clients cannot discover how to sign in",
                "make sure the front proxy passes /mcp and the WWW-Authenticate header through unchanged",
            )
            return
        metadata_url = found.group(1)
        if urlsplit(metadata_url).scheme not in ("http", "https") or origin(metadata_url) != origin(public):
            self._add("challenge", "fail", f"resource_metadata {metadata_url!r} is not an absolute URL on public_url")
            return
        self._add("challenge", "ok", f"401 names {metadata_url}")
        resource_path = urlsplit(resource).path
        well_known = origin(public) + "/.well-known/oauth-protected-resource" + resource_path
        issuer = await self._check_prm(metadata_url, resource, "the challenge's resource_metadata")
        if well_known != metadata_url:
            await self._check_prm(well_known, resource, "RFC 9728's well-known URL")
        if issuer is not None:
            await self._check_as_metadata(issuer)

    async def _check_prm(self, url: str, resource: str, what: str) -> str | None:
        try:
            fetched = await self._fetch("GET", url)
            document = fetched.json() if fetched.status == 200 else None
        except (*NETWORK_ERRORS, ValueError) as exc:
            self._add("resource_metadata", "fail", f"{what} {url}: {error_name(exc)}")
            return None
        if not isinstance(document, dict):
            self._add(
                "resource_metadata",
                "fail",
                f"{what} {url} answered {fetched.status}: clients that look there find no metadata",
                f"route {urlsplit(url).path} on {origin(url)} to the gateway's /.well-known/oauth-protected-resource"
                " (a front proxy that serves the gateway under a path must route the well-known paths too)",
            )
            return None
        if document.get("resource") != resource:
            self._add(
                "resource_metadata",
                "fail",
                f"{what} {url} says resource {document.get('resource')!r} but clients use {resource!r}: "
                "tokens will be refused for the wrong audience",
                "set public_url to the exact URL clients use (the front proxy must not rewrite the path prefix)",
            )
            return None
        servers = document.get("authorization_servers") or []
        self._add("resource_metadata", "ok", f"{what} {url} names resource {resource}")
        return str(servers[0]) if servers else None

    async def _check_as_metadata(self, issuer: str) -> None:
        path = urlsplit(issuer).path.rstrip("/")
        site = origin(issuer)
        # RFC 8414 §3.1 path insertion first, then the OIDC forms MCP 2025-11-25 clients also try.
        candidates = [
            site + "/.well-known/oauth-authorization-server" + path,
            site + "/.well-known/openid-configuration" + path,
            issuer.rstrip("/") + "/.well-known/openid-configuration",
        ]
        for url in candidates:
            try:
                fetched = await self._fetch("GET", url)
                document = fetched.json() if fetched.status == 200 else None
            except (*NETWORK_ERRORS, ValueError):
                continue
            if not isinstance(document, dict):
                continue
            if document.get("issuer") != issuer:
                self._add(
                    "authorization_server",
                    "fail",
                    f"{url} says issuer {document.get('issuer')!r}, not {issuer!r}: clients must refuse it",
                    "set public_url to the exact URL clients use",
                )
                return
            if "S256" not in (document.get("code_challenge_methods_supported") or []):
                self._add("authorization_server", "fail", f"{url} does not list S256: MCP clients refuse it")
                return
            self._add("authorization_server", "ok", f"{url} (issuer {issuer})")
            return
        self._add(
            "authorization_server",
            "fail",
            f"no authorization-server metadata for issuer {issuer} at {', '.join(candidates)}",
            f"route {urlsplit(candidates[0]).path} on {site} to the gateway's /.well-known/oauth-authorization-server",
        )

    async def check_metrics_exposure(self) -> None:
        if not self.config.metrics.enabled:
            return
        url = self.config.public_url + "/metrics"
        try:
            fetched = await self._fetch("GET", url)
        except NETWORK_ERRORS:
            return
        if fetched.status == 200 and b"# HELP" in fetched.body:
            self._add(
                "metrics",
                "fail",
                f"{url} is open to anyone who can reach public_url",
                "set metrics.bearer_token (from ${ENV}) or block /metrics at the front proxy",
            )
            return
        self._add("metrics", "ok", f"{url} is not open ({fetched.status})")

    def check_front_proxy(self) -> None:
        host = urlsplit(self.config.public_url).hostname or ""
        if is_loopback(host) or self.config.security.trusted_proxies:
            return
        self._add(
            "front_proxy",
            "warn",
            "security.trusted_proxies is empty: behind a load balancer every client shares its address, and so "
            "every per-address budget",
            "list the front proxy's addresses in security.trusted_proxies (it must append X-Forwarded-For)",
        )


def _is_liveness(fetched: Fetched) -> bool:
    try:
        body = fetched.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("status") == "ok"
