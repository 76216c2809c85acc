"""Account quotas: plans, one atomic counter per account (Redis, or in process), and the RateLimit fields.

plans.py           Plan, message_cost (what a JSON-RPC message costs), scale_plan
windows.py         fixed UTC windows (minute, day, calendar month)
limiter.py         the QuotaLimiter protocol, Decision, WindowState, Usage
redis_limiter.py   RedisLimiter: one Lua script on Redis time
memory_limiter.py  MemoryLimiter: the embedded default and the degraded fallback
degrading.py       DegradingLimiter: per-replica share while Redis is unreachable
headers.py         RateLimit-Policy, RateLimit, Retry-After
errors.py          QuotaExceeded (429)
config.py          QuotaConfig and its validator
factory.py         make_limiter, quota_redis_client
"""

from gateway.quota.config import QuotaConfig, parse_quota_config
from gateway.quota.degrading import DegradingLimiter
from gateway.quota.errors import QuotaExceeded
from gateway.quota.factory import make_limiter, quota_redis_client
from gateway.quota.headers import quota_headers
from gateway.quota.limiter import Decision, QuotaLimiter, Usage, WindowState
from gateway.quota.memory_limiter import MemoryLimiter
from gateway.quota.plans import STREAM_OPEN_COST, Plan, message_cost, scale_plan
from gateway.quota.redis_limiter import RedisLimiter

__all__ = [
    "STREAM_OPEN_COST",
    "Decision",
    "DegradingLimiter",
    "MemoryLimiter",
    "Plan",
    "QuotaConfig",
    "QuotaExceeded",
    "QuotaLimiter",
    "RedisLimiter",
    "Usage",
    "WindowState",
    "make_limiter",
    "message_cost",
    "parse_quota_config",
    "quota_headers",
    "quota_redis_client",
    "scale_plan",
]
