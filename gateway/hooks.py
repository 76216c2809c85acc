"""What features add to every answer, without a layer each: sync hooks run when a response is prepared, and
listeners told of each refusal the error middleware renders.

aiohttp runs every ``on_response_prepare`` receiver and every middleware as a coroutine of its own, on every
request; the gateway's are plain functions (none awaits), so one receiver (``run_response_hooks``) calls them
all and the error middleware (``gateway.routes``) tells the refusal listeners, in the order they were added.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from gateway.errors import GatewayError

ResponseHook = Callable[[web.Request, web.StreamResponse], None]
RefusalListener = Callable[[web.Request, GatewayError], None]

RESPONSE_HOOKS = web.AppKey("response_hooks", list[ResponseHook])
REFUSAL_LISTENERS = web.AppKey("refusal_listeners", list[RefusalListener])


def setup_hooks(app: web.Application) -> None:
    """Before any feature adds a hook: the lists, and the one ``on_response_prepare`` receiver."""
    app[RESPONSE_HOOKS] = []
    app[REFUSAL_LISTENERS] = []
    app.on_response_prepare.append(run_response_hooks)


def add_response_hook(app: web.Application, hook: ResponseHook) -> None:
    """Run ``hook(request, response)`` when any response's status and headers are about to be sent."""
    app[RESPONSE_HOOKS].append(hook)


def add_refusal_listener(app: web.Application, listener: RefusalListener) -> None:
    """Tell ``listener(request, error)`` of every gateway error the error middleware turns into a response."""
    app[REFUSAL_LISTENERS].append(listener)


async def run_response_hooks(request: web.Request, response: web.StreamResponse) -> None:
    for hook in request.app[RESPONSE_HOOKS]:
        hook(request, response)


def tell_refusal(request: web.Request, error: GatewayError) -> None:
    for listener in request.app.get(REFUSAL_LISTENERS, ()):
        listener(request, error)
