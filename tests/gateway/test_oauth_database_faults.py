"""The database goes away partway through an OAuth page (issue 11 item 14): the person gets the 503 page with
``Retry-After``, never a JSON 500, and the same browser gets through once the database is back."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.storage import Storage
from gateway.storage.base import StorageError
from tests.support.databases import postgres_behind_proxy
from tests.support.gateway import TEST_PASSWORD, running_gateway
from tests.support.oauth_browser import Browser
from tests.support.oauth_flows import (
    EMAIL,
    Reply,
    approve,
    browser_post,
    new_pkce,
    register,
    sign_in_page,
    until_consent,
)
from tests.support.tcp_proxy import TcpProxy

UNUSED_UPSTREAM = "http://127.0.0.1:9/mcp"


class CutBeforeCall:
    """The real storage, behind the cuttable proxy; the proxy is cut just before the next call of ``method``,
    once armed, so the failure lands partway through a request, after its earlier queries succeeded."""

    def __init__(self, inner: Storage, proxy: TcpProxy, method: str) -> None:
        self._inner = inner
        self._proxy = proxy
        self._method = method
        self.armed = False
        self.cuts = 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name != self._method or not self.armed:
            return attribute

        async def cut_then_call(*args: Any, **kwargs: Any) -> Any:
            self.armed = False
            self.cuts += 1
            self._proxy.cut()
            return await attribute(*args, **kwargs)

        return cut_then_call


class FailingCall:
    """The real storage whose ``method`` raises ``error`` while armed (a storage failure other than
    unavailability, e.g. a constraint the backend reports)."""

    def __init__(self, inner: Storage, method: str, error: StorageError) -> None:
        self._inner = inner
        self._method = method
        self._error = error
        self.armed = False

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name != self._method or not self.armed:
            return attribute

        async def fail(*args: Any, **kwargs: Any) -> Any:
            raise self._error

        return fail


def assert_unavailable_page(reply: Reply) -> None:
    assert reply.status == 503, (reply.status, reply.text[:300])
    assert reply.headers["Content-Type"].startswith("text/html"), reply.text[:300]
    assert reply.headers["Retry-After"].isdigit()
    assert "Location" not in reply.headers
    assert "Please try again shortly" in reply.text
    assert "Traceback" not in reply.text


async def get(browser: Browser, url: str) -> Reply:
    async with browser.session.get(url, allow_redirects=False) as response:
        return Reply(response.status, response.headers.copy(), await response.read())


@pytest.mark.postgres
async def test_postgresql_cut_partway_through_authorize_answers_the_503_page_and_the_retry_works():
    """A signed-in user who approved the app before: /authorize reads the session (fine), then the remembered
    approval when the database drops."""
    async with postgres_behind_proxy(connect_timeout=2) as (postgres, proxy):
        storage = CutBeforeCall(postgres, proxy, "get_consent")
        async with (
            running_gateway(storage=storage, upstream_url=UNUSED_UPSTREAM) as gateway,  # type: ignore[arg-type]
            Browser(gateway.url) as browser,
        ):
            await gateway.new_user(EMAIL)
            app = await register(gateway.url)
            await approve(browser, app.authorization_url(new_pkce()), EMAIL)
            url = app.authorization_url(new_pkce())
            storage.armed = True
            assert_unavailable_page(await get(browser, url))
            assert storage.cuts == 1
            proxy.restore()
            again = await browser.open(url)
        assert "code" in getattr(again, "params", {}), again


@pytest.mark.postgres
async def test_postgresql_cut_partway_through_the_sign_in_post_answers_the_503_page_and_the_retry_works():
    """The password is checked and the session started; the database drops as the pending request is bound to
    the user."""
    async with postgres_behind_proxy(connect_timeout=2) as (postgres, proxy):
        storage = CutBeforeCall(postgres, proxy, "set_authorization_user")
        async with (
            running_gateway(storage=storage, upstream_url=UNUSED_UPSTREAM) as gateway,  # type: ignore[arg-type]
            Browser(gateway.url) as browser,
        ):
            await gateway.new_user(EMAIL)
            app = await register(gateway.url)
            url = app.authorization_url(new_pkce())
            page = await sign_in_page(browser, url)
            fields = {**page.hidden(), "email": EMAIL, "password": TEST_PASSWORD}
            storage.armed = True
            assert_unavailable_page(await browser_post(browser, "/login", fields, Origin=gateway.url))
            assert storage.cuts == 1
            proxy.restore()
            again = await browser.authorize(url, EMAIL)
        assert "code" in again.params


@pytest.mark.postgres
async def test_postgresql_cut_partway_through_the_consent_post_answers_the_503_page_and_the_app_can_start_again():
    """The decision is recorded (the pending request completed) and the database drops as the approval is saved:
    nothing is redirected to the app, and its next attempt goes through."""
    async with postgres_behind_proxy(connect_timeout=2) as (postgres, proxy):
        storage = CutBeforeCall(postgres, proxy, "save_consent")
        async with (
            running_gateway(storage=storage, upstream_url=UNUSED_UPSTREAM) as gateway,  # type: ignore[arg-type]
            Browser(gateway.url) as browser,
        ):
            await gateway.new_user(EMAIL)
            app = await register(gateway.url)
            consent = await until_consent(browser, app.authorization_url(new_pkce()), EMAIL)
            storage.armed = True
            fields = {**consent.hidden(), "decision": "approve"}
            assert_unavailable_page(await browser_post(browser, "/consent", fields, Origin=gateway.url))
            assert storage.cuts == 1
            proxy.restore()
            again = await browser.authorize(app.authorization_url(new_pkce()), EMAIL)
        assert "code" in again.params


async def test_any_storage_error_on_the_oauth_pages_is_the_503_page_not_a_json_500(
    sqlite_storage: Storage,
):
    """Not only unavailability: whatever storage error escapes a step, the browser sees the page."""
    storage = FailingCall(sqlite_storage, "create_authorization_request", StorageError("constraint"))
    async with (
        running_gateway(storage=storage, upstream_url=UNUSED_UPSTREAM) as gateway,  # type: ignore[arg-type]
        Browser(gateway.url) as browser,
    ):
        await gateway.new_user(EMAIL)
        app = await register(gateway.url)
        storage.armed = True
        assert_unavailable_page(await get(browser, app.authorization_url(new_pkce())))
