"""The dashboard gets its collaborators from its own context: it shows the quota through the gate it was given,
never by reaching into the MCP proxy's context."""

from __future__ import annotations

import ast
from pathlib import Path

from gateway.dashboard.context import DASHBOARD
from gateway.quota.setup import QUOTA_GATE
from tests.support.gateway import GatewayHandle

DASHBOARD_SOURCES = Path(__file__).resolve().parents[2] / "gateway" / "dashboard"


def test_no_dashboard_module_imports_the_proxy():
    for path in DASHBOARD_SOURCES.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("gateway.proxy"), f"{path.name} imports {node.module}"
            if isinstance(node, ast.Import):
                assert not any(alias.name.startswith("gateway.proxy") for alias in node.names), path.name


async def test_the_dashboard_shows_usage_from_the_same_quota_gate_the_mcp_endpoints_charge(gateway: GatewayHandle):
    assert gateway.app[DASHBOARD].quota is gateway.app[QUOTA_GATE]
