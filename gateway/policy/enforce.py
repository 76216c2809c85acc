"""Judging one MCP POST against the policy, before anything reaches the upstream or the quota.

``tools/call``, ``resources/read`` and ``prompts/get`` need the scopes of their target's rule. For MCP
2026-07-28 requests the ``Mcp-Method`` / ``Mcp-Name`` headers are judged first, before the body matters. A
refusal is a 403 whose ``WWW-Authenticate`` challenge names every scope the refused call(s) need and whose body
is JSON-RPC: one error, or for a batch one error per refused member (by id; nothing of the batch is forwarded).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from prometheus_client import Counter

from gateway.audit import AuditLog
from gateway.credentials import Principal
from gateway.credentials.extract import Challenge
from gateway.errors import ErrorStyle, InsufficientScope
from gateway.metrics import bounded
from gateway.policy.match import EVERYTHING, Held, Kind, Need, Policy
from gateway.quota.plans import Plan

JSONRPC_INSUFFICIENT_SCOPE: Final = -32003
TARGETS: Final[Mapping[str, tuple[Kind, str]]] = {
    "tools/call": ("tool", "name"),
    "resources/read": ("resource", "uri"),
    "prompts/get": ("prompt", "name"),
}
LISTS: Final = frozenset({"tools/list", "resources/list", "resources/templates/list", "prompts/list"})
Consistency = Callable[[Mapping[str, str], object], None]
REFUSED_MESSAGE: Final = "The credential does not carry the scope this call needs"
_AUDIT_TARGET_CHARS: Final = 200


@dataclass(frozen=True, slots=True)
class Refused:
    id: object
    need: Need


class ScopeRefused(InsufficientScope):
    """403 ``insufficient_scope`` on the MCP endpoints: the challenge names every scope needed, the body is JSON-RPC."""

    def __init__(self, refused: list[Refused], *, resource_metadata: str | None, batch: bool) -> None:
        scopes: list[str] = []
        for item in refused:
            scopes += [s for s in item.need.scopes if s not in scopes]
        self.scope = " ".join(scopes)
        headers = Challenge(resource_metadata, self.scope).headers("insufficient_scope")
        super().__init__(REFUSED_MESSAGE, headers=headers)
        self.refused = refused
        self.batch = batch

    def body(self, style: ErrorStyle = ErrorStyle.JSONRPC) -> Any:
        if style is not ErrorStyle.JSONRPC:
            return super().body(style)
        errors = [
            {
                "jsonrpc": "2.0",
                "id": item.id,
                "error": {
                    "code": JSONRPC_INSUFFICIENT_SCOPE,
                    "message": REFUSED_MESSAGE,
                    "data": {"error": "insufficient_scope", "scope": " ".join(item.need.scopes)},
                },
            }
            for item in self.refused
        ]
        return errors if self.batch else errors[0]


@dataclass
class Verdict:
    """An admitted message: what it may see (``held``), whether its answers are lists to filter, what it costs."""

    held: Held
    lists: bool = False
    tool_weights: list[int] = field(default_factory=list)
    """The configured weights of the rules of its ``tools/call`` members."""

    def extra_cost(self, plan: Plan) -> int:
        """Units to add to the plan's cost: each weighted rule replaces the plan's ``tools_call_weight``."""
        if not self.tool_weights:
            return 0
        return sum(weight - plan.tools_call_weight for weight in self.tool_weights)

    @property
    def filters(self) -> bool:
        return self.lists and not self.held.everything


ALLOW_ALL: Final = Verdict(EVERYTHING)


@dataclass(frozen=True)
class Enforcer:
    policy: Policy
    decisions: Counter
    audit: AuditLog | None
    resource_metadata: str | None

    def judge_headers(self, headers: Mapping[str, str], principal: Principal) -> None:
        """MCP 2026-07-28: refuse (``ScopeRefused``) a call whose ``Mcp-Method``/``Mcp-Name`` name a target the
        principal may not use, before the body is read or parsed: whatever the body says, nothing else matters."""
        if not self.policy.enabled:
            return
        target = TARGETS.get(headers.get("Mcp-Method", ""))
        name = headers.get("Mcp-Name")
        if target is None or name is None:
            return
        need = self.policy.need(target[0], name)
        if not self.policy.held(principal.scope).covers(need):
            self._note(principal, need, headers["Mcp-Method"], name, "refused")
            raise ScopeRefused([Refused(None, need)], resource_metadata=self.resource_metadata, batch=False)

    def judge(
        self,
        headers: Mapping[str, str],
        principal: Principal,
        message: object,
        consistent: Consistency | None = None,
        *,
        headers_judged: bool = False,
    ) -> Verdict:
        """The verdict on one POST body (parsed), or ``ScopeRefused``. The headers are judged first, then
        ``consistent`` (the ``Mcp-Method``/``Mcp-Name`` check against the body, 400) runs, then the body is
        judged: a forbidden ``Mcp-Name`` is 403 whatever the body says; a mismatch whose body alone names a
        forbidden target is the 400. ``headers_judged``: the caller already ran ``judge_headers`` (before reading
        the body), so it is not run twice."""
        if not headers_judged:
            self.judge_headers(headers, principal)
        if consistent is not None:
            consistent(headers, message)
        if not self.policy.enabled:
            return ALLOW_ALL
        held = self.policy.held(principal.scope)
        members = message if isinstance(message, list) else [message]
        verdict = Verdict(held)
        refused: list[Refused] = []
        allowed: list[tuple[Need, str, object]] = []
        for member in members:
            if not isinstance(member, dict) or not isinstance(member.get("method"), str):
                continue
            method = member["method"]
            if method in LISTS:
                verdict.lists = True
            target = TARGETS.get(method)
            if target is None:
                continue
            params = member.get("params")
            value = params.get(target[1]) if isinstance(params, dict) else None
            need = self.policy.need(target[0], value if isinstance(value, str) else "")
            if held.covers(need):
                allowed.append((need, method, value))
                if method == "tools/call" and need.weight is not None and "id" in member:
                    verdict.tool_weights.append(need.weight)
            else:
                self._note(principal, need, method, value, "refused")
                refused.append(Refused(member.get("id"), need))
        if refused:  # nothing of the batch runs: its allowed members are not counted as calls
            raise ScopeRefused(refused, resource_metadata=self.resource_metadata, batch=isinstance(message, list))
        for need, method, value in allowed:
            self._note(principal, need, method, value, "allowed")
        return verdict

    def _note(self, principal: Principal, need: Need, method: str, target: object, outcome: str) -> None:
        self.decisions.labels(rule=bounded(need.rule, self.policy.rule_names), outcome=outcome).inc()
        if self.audit is not None:
            self.audit.record(
                f"policy.{outcome}",
                actor=principal.user_id,
                client_id=principal.client_id,
                reason=None if outcome == "allowed" else "insufficient_scope",
                rule=need.rule,
                method=method,
                target=str(target)[:_AUDIT_TARGET_CHARS],
                credential=principal.method,
            )
