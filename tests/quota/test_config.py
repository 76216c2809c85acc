"""The ``quota:`` configuration section: defaults, plans, and every problem reported with its path."""

from __future__ import annotations

from gateway.quota import Plan, QuotaConfig, parse_quota_config


def test_without_a_section_the_free_plan_is_the_default_and_unlimited_exists() -> None:
    config, problems = parse_quota_config(None)
    assert problems == []
    assert config == QuotaConfig()
    assert config.plan_for(None) == Plan("free", per_minute=60, per_day=1000)
    assert config.plans["unlimited"].unlimited
    assert 0 < config.degraded_share <= 1


def test_configured_plans_are_merged_over_the_built_in_ones() -> None:
    config, problems = parse_quota_config(
        {
            "default_plan": "pro",
            "degraded_share": 0.25,
            "plans": {
                "pro": {"per_minute": 600, "per_day": None, "per_month": 100_000, "tools_call_weight": 2},
                "free": {"per_minute": 10},
                "staff": None,
            },
        }
    )
    assert problems == []
    assert config.plans["pro"] == Plan("pro", per_minute=600, per_month=100_000, tools_call_weight=2)
    assert config.plans["free"] == Plan("free", per_minute=10)
    assert config.plans["staff"].unlimited
    assert "unlimited" in config.plans
    assert (config.default_plan, config.degraded_share) == ("pro", 0.25)


def test_an_account_on_an_unknown_plan_gets_the_default_plan_never_unlimited() -> None:
    config, _ = parse_quota_config({})
    assert config.plan_for("gold") == config.plans["free"]
    assert config.plan_for("unlimited").unlimited


def test_every_problem_is_reported_with_its_path() -> None:
    _, problems = parse_quota_config(
        {
            "default_plan": "gold",
            "degraded_share": 0,
            "degraded_min_limit": 0,
            "redis_timeout": "fast",
            "redis_retry_interval": -1,
            "key_prefix": "gw:{q}",
            "colour": "blue",
            "plans": {
                "free": {"per_minute": 0, "per_day": True, "per_hour": 5},
                "Bad Name": {},
                "heavy": {"tools_call_weight": 5000},
                "flat": [1, 2],
            },
        }
    )
    assert sorted(problems) == sorted(
        [
            "quota.colour: unknown key",
            "quota.plans.free.per_hour: unknown key",
            "quota.plans.free.per_minute: must be at least 1",
            "quota.plans.free.per_day: expected an integer",
            "quota.plans.Bad Name: plan names are 1-32 lowercase letters, digits, '_' or '-', starting with a letter",
            "quota.plans.heavy.tools_call_weight: must be at most 1000",
            "quota.plans.flat: expected a mapping",
            "quota.default_plan: no plan named 'gold' (known: free, unlimited)",
            "quota.degraded_share: must be greater than 0 and at most 1",
            "quota.degraded_min_limit: must be at least 1",
            "quota.redis_timeout: expected a number",
            "quota.redis_retry_interval: must be greater than 0 and at most 300",
            "quota.key_prefix: 1-32 characters among letters, digits, '_', ':' and '-'",
        ]
    )


def test_a_section_that_is_not_a_mapping_is_a_problem() -> None:
    config, problems = parse_quota_config([1], path="quota")
    assert (config, problems) == (QuotaConfig(), ["quota: expected a mapping"])
    _, problems = parse_quota_config({"plans": ["free"]})
    assert problems == ["quota.plans: expected a mapping of plan names to plans"]
