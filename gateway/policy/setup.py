"""Wires the policy into the app: ``POLICY`` holds what the MCP handlers call (judge a POST, relay its answer,
filter the legacy event stream). Without an ``authorization`` section every call passes and nothing is filtered."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import Counter

from gateway.appkeys import CONFIG
from gateway.audit import AUDIT
from gateway.credentials import Principal
from gateway.credentials.setup import AUTHENTICATOR
from gateway.metrics import METRICS
from gateway.policy.enforce import ALLOW_ALL, Consistency, Enforcer, Verdict
from gateway.policy.filter import SseFilter, relay_filtered
from gateway.policy.match import Policy
from gateway.proxy.http1 import Response
from gateway.proxy.upstream import ChunkFilter, Upstream


@dataclass(frozen=True)
class PolicyHooks:
    enforcer: Enforcer

    @property
    def policy(self) -> Policy:
        return self.enforcer.policy

    def judge_headers(self, request: web.Request, principal: Principal) -> None:
        """MCP 2026-07-28: a forbidden ``Mcp-Name`` is refused (403) before the body matters."""
        self.enforcer.judge_headers(request.headers, principal)

    def judge(
        self,
        request: web.Request,
        principal: Principal,
        message: object,
        consistent: Consistency | None = None,
        *,
        headers_judged: bool = False,
    ) -> Verdict:
        """The verdict on a POST (``Mcp-Name`` first, then ``consistent``, then the body), or ``ScopeRefused``."""
        return self.enforcer.judge(request.headers, principal, message, consistent, headers_judged=headers_judged)

    async def relay(
        self,
        upstream_api: Upstream,
        request: web.Request,
        upstream: Response,
        verdict: Verdict,
        extra_headers: Mapping[str, str],
    ) -> web.StreamResponse:
        """The upstream's answer, its lists filtered when the verdict says so."""
        if not verdict.filters:
            return await upstream_api.relay(request, upstream, extra_headers=extra_headers)
        return await relay_filtered(
            upstream_api, request, upstream, policy=self.policy, held=verdict.held, extra_headers=extra_headers
        )

    def stream_verdict(self, principal: Principal) -> Verdict:
        """The verdict on a request without a body to judge (``GET``, ``DELETE``): filter any list answer it
        carries (a stream resumed with ``Last-Event-ID`` replays answers)."""
        held = self.policy.held(principal.scope)
        return ALLOW_ALL if held.everything else Verdict(held, lists=True)

    def stream_filter(self, principal: Principal) -> ChunkFilter | None:
        """The filter of a legacy SSE stream (its answers arrive there), or None when it sees everything."""
        held = self.policy.held(principal.scope)
        return None if held.everything else SseFilter(self.policy, held)


POLICY = web.AppKey("policy", PolicyHooks)


@contextlib.asynccontextmanager
async def _policy_ctx(app: web.Application) -> AsyncIterator[None]:
    decisions = Counter(
        "gateway_policy_decisions",
        "Calls judged by the authorization policy, by rule (configured names and 'default') and outcome.",
        ["rule", "outcome"],
        registry=app[METRICS].registry,
    )
    app[POLICY] = PolicyHooks(
        Enforcer(
            policy=Policy(app[CONFIG].authorization),
            decisions=decisions,
            audit=app.get(AUDIT),
            resource_metadata=app[AUTHENTICATOR].challenge.resource_metadata,
        )
    )
    yield


def setup_policy(app: web.Application) -> None:
    """After the credentials (the challenge's metadata URL)."""
    app.cleanup_ctx.append(_policy_ctx)
