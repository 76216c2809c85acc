"""The dashboard through a test ``Browser``: sign in, read the account page, post its forms."""

from __future__ import annotations

import html
import re

from tests.support.gateway import TEST_PASSWORD
from tests.support.oauth_browser import Browser, Page, Redirect
from tests.support.oauth_flows import Reply, browser_post

_APP_FORM = re.compile(
    r'action="/account/apps/([0-9a-f]{32})/revoke">\s*<input[^>]*>\s*<button[^>]*aria-label="Revoke ([^"]*)"'
)
_KEY_FORM = re.compile(
    r'action="/account/keys/([A-Za-z0-9_]+)/revoke">\s*<input[^>]*>\s*<button[^>]*aria-label="Revoke key ([^"]*)"'
)
_NEW_KEY = re.compile(r'id="new-key" type="text" readonly value="([^"]+)"')


def page(result: Page | Redirect) -> Page:
    assert isinstance(result, Page), result
    return result


async def sign_in(browser: Browser, email: str, password: str = TEST_PASSWORD) -> Page:
    """Sign in at /account/login (unless this browser already is) and return the account page."""
    form = page(await browser.open(browser.origin + "/account/login"))
    if 'action="/account/login"' not in form.text:
        return form
    account = page(await browser.submit(form, "/account/login", email=email, password=password))
    assert account.status == 200, account.text[:500]
    assert "Your account" in account.text
    return account


async def account(browser: Browser) -> Page:
    return page(await browser.open(browser.origin + "/account"))


def csrf(account_page: Page) -> str:
    return account_page.hidden()["csrf"]


def apps(account_page: Page) -> dict[str, str]:
    """App name (unescaped) -> opaque app id, as listed under Authorized Apps."""
    return {html.unescape(name): app_id for app_id, name in _APP_FORM.findall(account_page.text)}


def keys(account_page: Page) -> dict[str, str]:
    return {html.unescape(name): key_id for key_id, name in _KEY_FORM.findall(account_page.text)}


async def post(browser: Browser, path: str, fields: dict[str, str], **headers: str) -> Reply:
    """A same-origin form post (headers may override), redirects not followed."""
    return await browser_post(browser, path, fields, **{"Origin": browser.origin, **headers})


async def create_key(browser: Browser, name: str, **fields: str) -> str:
    """Create a key from the dashboard; returns the key shown (once) on the result page."""
    shown = page(await browser.submit(await account(browser), "/account/keys", name=name, **fields))
    assert shown.status == 200, shown.text[:500]
    match = _NEW_KEY.search(shown.text)
    assert match is not None
    return match.group(1)
