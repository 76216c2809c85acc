"""What a route declares, and finding the declaration that answers a request.

A ``Route`` is one line of the route table (``gateway.routes``): path, methods, handler, the metrics label, how
its errors are shown (``ErrorStyle``) and its body cap (``BodyCap``). The middlewares read the declaration of the
request at hand with ``route_of``; a request that matches no route (404, or 405 on a known path) gets the
declaration of the path it names, or ``UNROUTED`` (JSON errors, label ``other``).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute

from gateway.errors import ErrorStyle, Handler


class BodyCap(enum.Enum):
    """Which configured cap bounds a route's body, checked on ``Content-Length`` and on the stream."""

    SMALL = "limits.max_form_bytes"
    """HTML forms and the admin API: a few fields, never megabytes."""
    LARGE = "limits.max_body_bytes"
    """Everything else (the MCP data plane above all; OAuth endpoints apply their own smaller bounds)."""


@dataclass(frozen=True)
class Route:
    path: str
    """An aiohttp path template (``/account/keys/{key_id}/revoke``)."""
    methods: tuple[str, ...]
    handler: Handler
    label: str
    """The ``route`` label of the request metrics (one of ``gateway.metrics.ROUTES``)."""
    errors: ErrorStyle = ErrorStyle.JSON
    body: BodyCap = BodyCap.LARGE
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pattern", _compile(self.path))


_PARAM = re.compile(r"\{(\w+)(?::([^{}]+))?\}")


def _compile(template: str) -> re.Pattern[str]:
    parts, last = [], 0
    for match in _PARAM.finditer(template):
        parts.append(re.escape(template[last : match.start()]))
        parts.append(f"(?:{match.group(2) or '[^/]+'})")
        last = match.end()
    parts.append(re.escape(template[last:]))
    return re.compile("".join(parts))


async def _not_found(request: web.Request) -> web.StreamResponse:
    raise web.HTTPNotFound()


UNROUTED = Route("", (), _not_found, "other")
"""The declaration of a request no route matches (JSON errors, the default body cap)."""


class RouteIndex:
    """The declarations of an app's routes, by aiohttp route (matched requests) and by path (the rest)."""

    def __init__(self) -> None:
        self._by_route: dict[AbstractRoute, Route] = {}
        self._routes: list[Route] = []

    def add(self, app: web.Application, route: Route) -> None:
        methods = route.methods + (("HEAD",) if "GET" in route.methods and "HEAD" not in route.methods else ())
        for method in methods:
            self._by_route[app.router.add_route(method, route.path, route.handler)] = route
        self._routes.append(route)

    @property
    def routes(self) -> tuple[Route, ...]:
        return tuple(self._routes)

    def declaration(self, route: AbstractRoute) -> Route | None:
        """The table line that registered ``route`` (None: registered outside the table)."""
        return self._by_route.get(route)

    def find(self, request: web.Request) -> Route:
        declared = self._by_route.get(request.match_info.route)
        if declared is not None:
            return declared
        # No route (404), or none for this method (405): the first line for the path shows the error.
        path = request.path
        return next((route for route in self._routes if route.pattern.fullmatch(path)), UNROUTED)


ROUTE_INDEX = web.AppKey("route_index", RouteIndex)
ROUTE = web.RequestKey("route", Route)


def route_of(request: web.Request) -> Route:
    """The declaration of the route answering ``request`` (looked up once per request)."""
    route = request.get(ROUTE)
    if route is None:
        index = request.app.get(ROUTE_INDEX)
        route = index.find(request) if index is not None else UNROUTED
        request[ROUTE] = route
    return route
