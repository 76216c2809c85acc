"""The ``quota:`` section of the gateway configuration, validated with every problem reported by path.

    quota:
      default_plan: free            # the plan of accounts that have none (or an unknown one)
      degraded_share: 0.5           # per-replica share of each cap while Redis is unreachable (1/replicas)
      degraded_min_limit: 1         # floor of a scaled cap
      redis_timeout: 0.25           # seconds an admission waits for Redis before answering locally
      redis_retry_interval: 1.0     # seconds between probes of an unreachable Redis
      key_prefix: "gw:q"
      lease: true                   # with Redis: lease slices of each window per replica (no round trip per request)
      max_concurrent_streams: 20    # open GET /mcp and /mcp/sse streams per account (null: no cap)
      stream_lease_seconds: 60      # a crashed replica's streams are forgotten after this
      plans:                        # merged over the built-in plans ``free`` and ``unlimited``
        pro: {per_minute: 600, per_day: 50000, per_month: 1000000, tools_call_weight: 2}

A plan's caps are integers ≥ 1 or null (no cap for that window); a plan without caps is unlimited.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from gateway.quota.plans import FREE, UNLIMITED, Plan

DEFAULT_PLANS: Final[Mapping[str, Plan]] = MappingProxyType({FREE.name: FREE, UNLIMITED.name: UNLIMITED})
DEFAULT_PLAN: Final = FREE.name
DEFAULT_DEGRADED_SHARE: Final = 0.5
DEFAULT_DEGRADED_MIN_LIMIT: Final = 1
DEFAULT_REDIS_TIMEOUT: Final = 0.25
DEFAULT_REDIS_RETRY_INTERVAL: Final = 1.0
DEFAULT_KEY_PREFIX: Final = "gw:q"
DEFAULT_MAX_CONCURRENT_STREAMS: Final = 20
DEFAULT_STREAM_LEASE_SECONDS: Final = 60.0
MAX_TOOLS_CALL_WEIGHT: Final = 1000

_PLAN_NAME: Final = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_KEY_PREFIX: Final = re.compile(r"^[A-Za-z0-9_:-]{1,32}$")
_PLAN_CAPS: Final = ("per_minute", "per_day", "per_month")


@dataclass(frozen=True)
class QuotaConfig:
    plans: Mapping[str, Plan] = field(default_factory=lambda: DEFAULT_PLANS)
    default_plan: str = DEFAULT_PLAN
    degraded_share: float = DEFAULT_DEGRADED_SHARE
    degraded_min_limit: int = DEFAULT_DEGRADED_MIN_LIMIT
    redis_timeout: float = DEFAULT_REDIS_TIMEOUT
    redis_retry_interval: float = DEFAULT_REDIS_RETRY_INTERVAL
    key_prefix: str = DEFAULT_KEY_PREFIX
    max_concurrent_streams: int | None = DEFAULT_MAX_CONCURRENT_STREAMS
    stream_lease_seconds: float = DEFAULT_STREAM_LEASE_SECONDS
    lease: bool = True
    """Lease slices of the shared counter (``leased.py``) rather than one Redis call per request."""

    def plan_for(self, name: str | None) -> Plan:
        """The named plan; the default plan for an account with none or with a plan no longer configured."""
        if name is not None and name in self.plans:
            return self.plans[name]
        return self.plans[self.default_plan]


def parse_quota_config(raw: object, path: str = "quota") -> tuple[QuotaConfig, list[str]]:
    """The section as a ``QuotaConfig`` (defaults where a value is invalid) and every problem found."""
    problems: list[str] = []
    if raw is None:
        return QuotaConfig(), problems
    if not isinstance(raw, dict):
        return QuotaConfig(), [f"{path}: expected a mapping"]
    known = {"plans", "default_plan", "degraded_share", "degraded_min_limit", "redis_timeout"}
    known |= {"redis_retry_interval", "key_prefix", "max_concurrent_streams", "stream_lease_seconds", "lease"}
    problems += [f"{path}.{key}: unknown key" for key in raw if key not in known]
    values: dict[str, Any] = {}

    plans = dict(DEFAULT_PLANS)
    if "plans" in raw:
        if isinstance(raw["plans"], dict):
            for name, body in raw["plans"].items():
                plan = _parse_plan(name, body, f"{path}.plans.{name}", problems)
                if plan is not None:
                    plans[plan.name] = plan
        else:
            problems.append(f"{path}.plans: expected a mapping of plan names to plans")
    values["plans"] = MappingProxyType(plans)

    if "default_plan" in raw:
        default = raw["default_plan"]
        if not isinstance(default, str):
            problems.append(f"{path}.default_plan: expected a string")
        elif default not in plans:
            problems.append(f"{path}.default_plan: no plan named {default!r} (known: {', '.join(sorted(plans))})")
        else:
            values["default_plan"] = default

    for name, high in [("degraded_share", 1.0), ("redis_timeout", 10.0), ("redis_retry_interval", 300.0)]:
        if name in raw:
            number = _number(raw[name], f"{path}.{name}", problems)
            if number is not None and not 0 < number <= high:
                problems.append(f"{path}.{name}: must be greater than 0 and at most {high:g}")
            elif number is not None:
                values[name] = number

    if "degraded_min_limit" in raw:
        floor = _integer(raw["degraded_min_limit"], f"{path}.degraded_min_limit", problems, low=1)
        if floor is not None:
            values["degraded_min_limit"] = floor

    if "max_concurrent_streams" in raw:
        if raw["max_concurrent_streams"] is None:
            values["max_concurrent_streams"] = None
        else:
            cap = _integer(raw["max_concurrent_streams"], f"{path}.max_concurrent_streams", problems, low=1)
            if cap is not None:
                values["max_concurrent_streams"] = cap

    if "stream_lease_seconds" in raw:
        lease = _number(raw["stream_lease_seconds"], f"{path}.stream_lease_seconds", problems)
        if lease is not None and not 5 <= lease <= 3600:
            problems.append(f"{path}.stream_lease_seconds: between 5 and 3600 seconds")
        elif lease is not None:
            values["stream_lease_seconds"] = lease

    if "lease" in raw:
        if isinstance(raw["lease"], bool):
            values["lease"] = raw["lease"]
        else:
            problems.append(f"{path}.lease: expected true or false")

    if "key_prefix" in raw:
        prefix = raw["key_prefix"]
        if not isinstance(prefix, str) or not _KEY_PREFIX.match(prefix):
            problems.append(f"{path}.key_prefix: 1-32 characters among letters, digits, '_', ':' and '-'")
        else:
            values["key_prefix"] = prefix

    return QuotaConfig(**values), problems


def _parse_plan(name: object, body: object, path: str, problems: list[str]) -> Plan | None:
    if not isinstance(name, str) or not _PLAN_NAME.match(name):
        problems.append(f"{path}: plan names are 1-32 lowercase letters, digits, '_' or '-', starting with a letter")
        return None
    if body is None:
        body = {}
    if not isinstance(body, dict):
        problems.append(f"{path}: expected a mapping")
        return None
    count = len(problems)
    problems += [f"{path}.{key}: unknown key" for key in body if key not in (*_PLAN_CAPS, "tools_call_weight")]
    caps: dict[str, int | None] = {}
    for cap in _PLAN_CAPS:
        if body.get(cap) is not None:
            caps[cap] = _integer(body[cap], f"{path}.{cap}", problems, low=1)
    weight = 1
    if "tools_call_weight" in body:
        parsed = _integer(
            body["tools_call_weight"], f"{path}.tools_call_weight", problems, low=1, high=MAX_TOOLS_CALL_WEIGHT
        )
        weight = parsed if parsed is not None else 1
    if len(problems) > count:
        return None
    return Plan(name, tools_call_weight=weight, **caps)


def _integer(value: object, path: str, problems: list[str], *, low: int, high: int | None = None) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        problems.append(f"{path}: expected an integer")
        return None
    if value < low:
        problems.append(f"{path}: must be at least {low}")
        return None
    if high is not None and value > high:
        problems.append(f"{path}: must be at most {high}")
        return None
    return value


def _number(value: object, path: str, problems: list[str]) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        problems.append(f"{path}: expected a number")
        return None
    return float(value)
