"""``/metrics`` during a full client life: the main series move, labels stay bounded, and no secret minted during
the flow appears in the exposition, in any log record (DEBUG, access log and audit log on) or in the audit log
(security-cases 103). The audit log names each security action with ids only."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from gateway.clock import ManualClock
from gateway.logs import JsonFormatter
from gateway.storage import Storage
from tests.gateway.test_secrets_at_rest import forms
from tests.support.gateway import UNUSED_UPSTREAM, running_gateway
from tests.support.https_server import serve_metadata_document
from tests.support.oauth_browser import Browser
from tests.support.oauth_clients import REDIRECT_URI
from tests.support.oauth_flows import OAuthApp, new_pkce, post_mcp, register, request, sign_in_page
from tests.support.observed_flow import EMAIL, run_observed_flow, samples, scrape, value
from tests.support.upstream import UpstreamProcess

METRICS_TOKEN = "scrape-token-7c1f0d5a2b"


async def test_a_full_client_life_moves_the_main_series_with_bounded_labels(
    sqlite_storage: Storage, upstream: UpstreamProcess
):
    clock = ManualClock(start=1_900_000_000.0)
    async with running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url, clock=clock) as gw:
        user = await gw.new_user(EMAIL)
        before = samples(await scrape(gw.url))
        flow = await run_observed_flow(gw.url, clock, lambda: gw.new_key(user))
        exposition = await scrape(gw.url)
    after = samples(exposition)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert value(before, "gateway_tokens_issued_total", grant_type="authorization_code") == 0
    assert moved("gateway_client_registrations_total", kind="dcr") == 1
    assert moved("gateway_logins_total", outcome="failed") == 1
    assert moved("gateway_logins_total", outcome="succeeded") == 1
    assert moved("gateway_tokens_issued_total", grant_type="authorization_code") == 2
    assert moved("gateway_tokens_issued_total", grant_type="refresh_token") == 1
    assert moved("gateway_refresh_reuse_detected_total") == 1
    assert moved("gateway_revocations_total", source="reuse") == 1
    assert moved("gateway_revocations_total", source="rfc7009") == 1
    assert moved("gateway_auth_failures_total", reason="revoked") == 2
    assert moved("gateway_auth_failures_total", reason="missing") == 1
    assert moved("gateway_auth_failures_total", reason="malformed") == 1
    assert moved("gateway_http_requests_total", route="token", method="POST", status="200") == 3
    assert moved("gateway_http_requests_total", route="token", method="POST", status="400") == 1
    assert moved("gateway_http_requests_total", route="mcp", method="POST", status="401") == 4
    assert moved("gateway_http_requests_total", route="register", method="POST", status="201") == 1
    assert moved("gateway_http_requests_total", route="metrics", method="GET", status="200") >= 1
    # Proxied calls: upstream time and gateway overhead, observed once per answered MCP request.
    answered = sum(
        moved("gateway_http_requests_total", route="mcp", method=method, status=status)
        for method in ("GET", "POST", "DELETE")
        for status in ("200", "202")
    )
    assert answered >= 5
    assert moved("gateway_upstream_duration_seconds_count", route="mcp") == answered
    assert moved("gateway_overhead_seconds_count", route="mcp") == answered
    assert moved("gateway_request_duration_seconds_count", route="mcp") >= answered
    assert flow.open_streams_seen >= 1  # the SDK's GET stream, while the session was open
    assert value(after, "gateway_open_streams", transport="streamable_http") == 0
    assert value(after, "gateway_upstream_errors_total", kind="refused") == 0

    routes = {dict(labels).get("route") for (_, labels) in after} - {None}
    assert routes <= {"mcp", "token", "revoke", "register", "authorize", "login", "consent", "metrics", "static"}
    for identifier in (flow.client_id, EMAIL, "127.0.0.1", str(urlsplit(gw.url).port), "/mcp", "Observed"):
        assert identifier not in exposition, identifier
    assert [name for name, secret in flow.secrets.items() if any(f.decode() in exposition for f in forms(secret))] == []


async def test_no_secret_of_a_full_client_life_reaches_a_log_record_the_audit_log_or_the_metrics(
    sqlite_storage: Storage, upstream: UpstreamProcess, caplog: pytest.LogCaptureFixture
):
    """Case 103, with the real SDK client and the audit log on: every record at DEBUG, as the JSON formatter
    writes it, and the exposition."""
    caplog.set_level(logging.DEBUG)
    clock = ManualClock(start=1_900_000_000.0)
    overrides = {"logging": {"access_log": True, "level": "DEBUG"}}
    async with running_gateway(
        storage=sqlite_storage, upstream_url=upstream.mcp_url, overrides=overrides, clock=clock
    ) as gw:
        user = await gw.new_user(EMAIL)
        flow = await run_observed_flow(gw.url, clock, lambda: gw.new_key(user))
        exposition = await scrape(gw.url)
    assert len(flow.secrets) > 15
    formatter = JsonFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    logged = "\n".join(lines + [record.getMessage() for record in caplog.records]).encode()
    assert b"/token" in logged, "the access log was expected to be captured"
    haystack = logged + exposition.encode()
    assert [name for name, secret in flow.secrets.items() if any(f in haystack for f in forms(secret))] == []

    audit = [json.loads(line) for line in lines if json.loads(line)["logger"] == "gateway.audit"]
    events = [entry["audit"] for entry in audit]
    for expected in (
        "client.registered",
        "login.failed",
        "login.succeeded",
        "consent.granted",
        "token.issued",
        "token.refreshed",
        "refresh.reuse_detected",
        "token.revoked",
    ):
        assert expected in events, expected
    by_event = {entry["audit"]: entry for entry in audit}
    assert by_event["login.succeeded"]["actor"] == user.id
    assert by_event["login.failed"]["actor"] == user.id
    assert by_event["login.failed"]["reason"] == "wrong_password"
    assert by_event["token.issued"]["client_id"] == flow.client_id
    assert by_event["token.issued"]["grant_type"] == "authorization_code"
    assert by_event["token.issued"]["family_id"]
    assert by_event["refresh.reuse_detected"]["reason"] == "refresh_reuse"
    assert {entry["reason"] for entry in audit if entry["audit"] == "token.revoked"} == {
        "refresh_reuse",
        "revoked_by_client",
    }
    assert EMAIL not in "\n".join(json.dumps(entry) for entry in audit)


async def test_a_failed_sign_in_for_an_unknown_address_is_audited_by_a_hash_prefix_never_the_address(
    sqlite_storage: Storage, upstream: UpstreamProcess, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="gateway.audit")
    typed = "Hunter2-Typed-In-The-Email-Field"
    async with running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url) as gw:
        app = await register(gw.url)
        async with Browser(gw.url) as browser:
            login = await sign_in_page(browser, app.authorization_url(new_pkce()))
            await browser.submit(login, "/login", email=typed, password="whatever it was")
    (failed,) = [r for r in caplog.records if getattr(r, "audit", None) == "login.failed"]
    line = JsonFormatter().format(failed)
    assert typed not in line
    assert typed.lower() not in line
    assert "whatever it was" not in line
    entry = json.loads(line)
    assert entry["actor"] == "anonymous"
    assert entry["reason"] == "unknown_account"
    assert len(entry["email_hash"]) == 12


async def test_metrics_with_a_bearer_token_refuse_a_scraper_without_it(
    sqlite_storage: Storage, upstream: UpstreamProcess
):
    overrides = {"metrics": {"bearer_token": METRICS_TOKEN}}
    async with running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url, overrides=overrides) as gw:
        missing = await request("GET", gw.url + "/metrics")
        wrong = await request("GET", gw.url + "/metrics", headers={"Authorization": "Bearer " + "x" * 22})
        text = await scrape(gw.url, {"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert (missing.status, wrong.status) == (401, 401)
    assert METRICS_TOKEN not in missing.text + wrong.text
    assert "gateway_http_requests_total" in text


async def test_metrics_can_be_turned_off(sqlite_storage: Storage, upstream: UpstreamProcess):
    overrides = {"metrics": {"enabled": False}}
    async with running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url, overrides=overrides) as gw:
        assert (await request("GET", gw.url + "/metrics")).status == 404


async def test_a_metadata_document_client_is_counted_and_audited_as_registered_when_its_document_is_fetched(
    sqlite_storage: Storage, upstream: UpstreamProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="gateway.audit")
    async with serve_metadata_document(tmp_path, client_name="Doc App", redirect_uris=[REDIRECT_URI]) as served:
        client_id, overrides = served.client_id, served.gateway_overrides
        async with running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url, overrides=overrides) as gw:
            app = OAuthApp(gw.url, client_id, REDIRECT_URI)
            async with Browser(gw.url) as browser:
                for _ in range(2):  # the second authorization finds the document in the cache
                    assert (await sign_in_page(browser, app.authorization_url(new_pkce()))).status == 200
            exposition = await scrape(gw.url)
    assert value(samples(exposition), "gateway_client_registrations_total", kind="cimd") == 1
    (event,) = [r for r in caplog.records if getattr(r, "audit", None) == "client.registered"]
    assert json.loads(JsonFormatter().format(event))["client_id"] == client_id
    assert "localhost" not in exposition


async def test_an_unreachable_upstream_counts_as_a_refused_upstream_error_and_no_upstream_time(
    sqlite_storage: Storage,
):
    async with running_gateway(storage=sqlite_storage, upstream_url=UNUSED_UPSTREAM) as gw:
        key = await gw.new_key(await gw.new_user(EMAIL))
        assert (await post_mcp(gw.url, {"X-API-Key": key})).status == 502
        found = samples(await scrape(gw.url))
    assert value(found, "gateway_upstream_errors_total", kind="refused") == 1
    assert value(found, "gateway_http_requests_total", route="mcp", method="POST", status="502") == 1
    assert value(found, "gateway_upstream_duration_seconds_count", route="mcp") == 0
    assert value(found, "gateway_request_duration_seconds_count", route="mcp") == 1
