"""HTML pages for people: rendering (autoescaped Jinja2), strict security headers, cookies, CSRF checks.

Pages work without JavaScript (plain forms). Every page forbids framing, caching and referrers, and
loads nothing but the gateway's own stylesheet. Cookies are ``__Host-`` prefixed (Secure, Path=/, no
Domain), HttpOnly and SameSite=Lax.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import jinja2
from aiohttp import web

from gateway.errors import BadForm, Forbidden, GatewayError

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Content-Type-Options": "nosniff",
}

_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def duration(seconds: int) -> str:
    """A wait in words a person reads at a glance: ``45 s``, ``12 min``, ``11 h 24 min``, ``3 d 2 h``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, _ = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


_environment.filters["duration"] = duration

JINJA = web.AppKey("jinja", jinja2.Environment)


def render(template: str, *, status: int = 200, **context: Any) -> web.Response:
    html = _environment.get_template(template).render(**context)
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS)


def error_page(title: str, message: str, *, status: int = 400, back: str | None = None) -> web.Response:
    """An error shown in the browser; nothing is redirected to a URI that has not been validated."""
    return render("error.html", status=status, title=title, message=message, back=back)


def see_other(location: str) -> web.Response:
    """303 after a form post (never 307, which would re-post the form); no caching, no referrer."""
    return web.Response(status=303, headers={**PAGE_HEADERS, "Location": location})


def found(location: str) -> web.Response:
    return web.Response(status=302, headers={**PAGE_HEADERS, "Location": location})


def set_cookie(response: web.StreamResponse, name: str, value: str, *, max_age: int | None = None) -> None:
    response.set_cookie(name, value, path="/", secure=True, httponly=True, samesite="Lax", max_age=max_age)


def clear_cookie(response: web.StreamResponse, name: str) -> None:
    response.del_cookie(name, path="/", secure=True, httponly=True, samesite="Lax")


FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_FIELDS = 32
MAX_FIELD = 1024


async def read_form(request: web.Request, public_origin: str) -> dict[str, str]:
    """A same-origin form post's fields, the last of a repeated name winning (longer values dropped).

    The pages' forms are URL-encoded UTF-8 (what browsers send without ``enctype``); anything else (multipart,
    another charset, undecodable bytes or percent-escapes, too many fields) is a 400 page, never a 500. The
    body is already bounded by the route's cap (``limits.max_form_bytes``: 413 above it)."""
    check_same_origin_post(request, public_origin)
    if request.content_type != FORM_MEDIA_TYPE:
        raise BadForm(f"The form must be sent as {FORM_MEDIA_TYPE}")
    if (request.charset or "utf-8").lower() not in ("utf-8", "utf8"):
        raise BadForm("The form must be encoded in UTF-8")
    body = await request.read()
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict", max_num_fields=MAX_FORM_FIELDS)
    except ValueError as exc:  # UnicodeDecodeError included
        raise BadForm("The form is not valid UTF-8 form data") from exc
    return {name: value for name, value in pairs if len(value) <= MAX_FIELD}


def check_same_origin_post(request: web.Request, public_origin: str) -> None:
    """Refuse cross-site form posts (OWASP CSRF: verify the source origin), besides the CSRF token."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        raise Forbidden("Cross-site request refused")
    origin = request.headers.get("Origin")
    if origin is not None and origin != "null" and origin.rstrip("/").lower() != public_origin:
        raise Forbidden("Cross-site request refused")


def error_response(exc: GatewayError, *, back: str | None = None) -> web.Response:
    """On pages a person sees, errors are pages too (a 503 says to retry), never a JSON body."""
    title = "Please try again shortly" if exc.status >= 500 else "Request refused"
    response = error_page(title, exc.description, status=exc.status, back=back)
    response.headers.update(exc.headers)
    return response


async def stylesheet(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "gateway.css", headers={"Cache-Control": "public, max-age=3600"})
