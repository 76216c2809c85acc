"""A person at a browser, for OAuth tests: follows the authorization URL, signs in, approves or denies.

It speaks plain HTTP to the gateway's HTML forms (which need no JavaScript), keeps cookies like a browser
(``__Host-`` cookies are Secure, so the gateway's loopback origin is treated as secure, as browsers do
for localhost), and stops at the redirect back to the client, returning what the client would receive.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urljoin, urlsplit

import aiohttp
from yarl import URL

from tests.support.gateway import TEST_PASSWORD

_HIDDEN = re.compile(r'<input type="hidden" name="(\w+)" value="([^"]*)">')


@dataclass
class Redirect:
    location: str

    @property
    def params(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.location).query, keep_blank_values=True).items()}


@dataclass
class Page:
    status: int
    url: str
    text: str
    headers: dict[str, str]

    def hidden(self) -> dict[str, str]:
        return {name: html.unescape(value) for name, value in _HIDDEN.findall(self.text)}


@dataclass
class Browser:
    """One browser profile (its own cookies). Use as an async context manager."""

    origin: str
    session: aiohttp.ClientSession = field(init=False)
    pages: list[Page] = field(default_factory=list)

    async def __aenter__(self) -> Browser:
        jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[URL(self.origin)])
        self.session = aiohttp.ClientSession(cookie_jar=jar)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()

    async def open(self, url: str, *, data: dict[str, str] | None = None) -> Page | Redirect:
        """GET (or POST ``data``) and follow redirects within the gateway; stop at one leaving it."""
        method = "POST" if data is not None else "GET"
        headers = {"Origin": self.origin, "Sec-Fetch-Site": "same-origin"} if data is not None else {}
        for _ in range(10):
            async with self.session.request(method, url, data=data, headers=headers, allow_redirects=False) as response:
                text = await response.text()
                if response.status in (301, 302, 303, 307, 308):
                    location = urljoin(url, response.headers["Location"])
                    if not location.startswith(self.origin + "/"):
                        return Redirect(location)
                    url, method, data, headers = location, "GET", None, {}
                    continue
                page = Page(response.status, str(response.url), text, dict(response.headers))
                self.pages.append(page)
                return page
        raise AssertionError("redirect loop")

    async def submit(self, page: Page, action: str, **fields: str) -> Page | Redirect:
        return await self.open(urljoin(self.origin, action), data={**page.hidden(), **fields})

    async def authorize(
        self, authorization_url: str, email: str, *, password: str = TEST_PASSWORD, decision: str = "approve"
    ) -> Redirect:
        """Sign in if asked, then approve (or deny); returns the redirect back to the client."""
        result = await self.open(authorization_url)
        if isinstance(result, Page) and 'action="/login"' in result.text:
            result = await self.submit(result, "/login", email=email, password=password)
        if isinstance(result, Page) and 'action="/consent"' in result.text:
            result = await self.submit(result, "/consent", decision=decision)
        if not isinstance(result, Redirect):
            raise AssertionError(f"expected a redirect to the client, got {result.status}: {result.text[:300]}")
        return result
