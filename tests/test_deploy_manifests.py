"""The deployment manifests (deploy/kubernetes, deploy/compose.yaml) say only what the gateway understands.

Nothing here runs a cluster or a container engine (neither exists on the test machines): the manifests are
parsed, their gateway configuration goes through the gateway's own loader, their commands through the gateway's
own argument parser, and their probes are matched against the application's real route table.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.app import create_app
from gateway.cli import build_parser
from gateway.config import GatewayConfig, parse_config
from upstream_mcp.__main__ import parse_args as upstream_args

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
COMPOSE_DIR = ROOT / "deploy"
STRONG = "x" * 32


def _kube_documents() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(KUBE.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            found[doc["kind"]] = doc
    return found


def _dockerfile() -> dict[str, Any]:
    text = (ROOT / "Dockerfile").read_text()
    final_stage = text.rsplit("\nFROM ", 1)[1]
    found: dict[str, Any] = {}
    for line in final_stage.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("ENTRYPOINT", "CMD"):
            found[word] = json.loads(rest)
        elif word == "EXPOSE":
            found[word] = int(rest)
        elif word == "RUN" and "useradd" in rest:
            found["uid"] = int(re.search(r"--uid (\d+)", rest).group(1))  # type: ignore[union-attr]
    return found


def _expand(value: str, env: dict[str, str]) -> str:
    """Compose's own ${NAME}, ${NAME:?message} and ${NAME:-default} forms."""

    def one(match: re.Match[str]) -> str:
        name, _, rest = match.group(1).partition(":")
        return env.get(name, rest[1:] if rest.startswith("-") else "")

    return re.sub(r"\$\{([^}]+)\}", one, value)


def _gateway_config(raw_yaml: str, env: dict[str, str]) -> GatewayConfig:
    return parse_config(yaml.safe_load(raw_yaml), env=env)


def _route_paths(config: GatewayConfig) -> set[str]:
    app = create_app(config)
    return {resource.canonical for resource in app.router.resources()}


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text()))


def _compose_gateway_env() -> dict[str, str]:
    env = {"POSTGRES_PASSWORD": STRONG, "REDIS_PASSWORD": STRONG}
    raw = _compose()["services"]["gateway-1"]["environment"]
    return {name: _expand(str(value), env) for name, value in raw.items()}


def test_every_kubernetes_manifest_parses_and_kustomize_lists_all_but_the_secret_example() -> None:
    kinds = set(_kube_documents())
    assert {"ConfigMap", "Secret", "Job", "Deployment", "Service", "HorizontalPodAutoscaler"} <= kinds
    assert "PodDisruptionBudget" in kinds
    listed = yaml.safe_load((KUBE / "kustomization.yaml").read_text())["resources"]
    on_disk = {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == on_disk - {"secret.example.yaml"}, "real secrets must never be applied from git"


def test_the_kubernetes_gateway_configuration_is_accepted_by_the_gateway_with_the_secret_as_environment() -> None:
    docs = _kube_documents()
    env = dict(docs["Secret"]["stringData"])
    config = _gateway_config(docs["ConfigMap"]["data"]["gateway.yaml"], env)
    assert config.redis.url
    assert config.storage.url.startswith("postgresql://")
    deployment = docs["Deployment"]["spec"]["template"]["spec"]
    container = deployment["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == config.server.port == _dockerfile()["EXPOSE"]


def test_kubernetes_probes_point_at_the_gateways_real_liveness_and_readiness_routes() -> None:
    docs = _kube_documents()
    config = _gateway_config(docs["ConfigMap"]["data"]["gateway.yaml"], dict(docs["Secret"]["stringData"]))
    routes = _route_paths(config)
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] in routes
        assert get["port"] in {p["name"] for p in container["ports"]}


def test_the_grace_period_covers_prestop_and_the_gateways_shutdown_timeout() -> None:
    docs = _kube_documents()
    config = _gateway_config(docs["ConfigMap"]["data"]["gateway.yaml"], dict(docs["Secret"]["stringData"]))
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    pre_stop = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] >= config.server.shutdown_timeout + float(pre_stop[1]) + 5
    grace = _compose()["x-gateway"]["stop_grace_period"]
    assert float(grace.rstrip("s")) > config.server.shutdown_timeout


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_kubernetes_containers_run_the_dockerfiles_image_user_and_a_real_cli_command(kind: str) -> None:
    docker = _dockerfile()
    assert docker["ENTRYPOINT"] == ["mcp-gateway"]
    pod = _kube_documents()[kind]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"].split(":")[0] == "mcp-gateway"
    assert pod["securityContext"]["runAsUser"] == docker["uid"]
    parsed = build_parser().parse_args(container["args"])
    assert parsed.command == ("serve" if kind == "Deployment" else "migrate")
    assert parsed.config == "/etc/mcp-gateway/gateway.yaml"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/etc/mcp-gateway" in mounts
    assert container["envFrom"][0]["secretRef"]["name"] == _kube_documents()["Secret"]["metadata"]["name"]


def test_service_pdb_and_autoscaler_select_the_deployments_pods() -> None:
    docs = _kube_documents()
    deployment = docs["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert docs["Service"]["spec"]["selector"].items() <= labels.items()
    assert docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    target = docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert docs["HorizontalPodAutoscaler"]["spec"]["minReplicas"] >= 2
    container_port_names = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {p["targetPort"] for p in docs["Service"]["spec"]["ports"]} <= container_port_names


def test_the_compose_gateway_configuration_is_accepted_and_trusts_only_the_load_balancer() -> None:
    compose = _compose()
    config = _gateway_config((COMPOSE_DIR / "compose" / "gateway.yaml").read_text(), _compose_gateway_env())
    assert config.redis.url
    assert config.storage.url.startswith("postgresql://gateway:")
    lb_address = compose["services"]["lb"]["networks"]["backend"]["ipv4_address"]
    assert config.security.trusted_proxies == (lb_address,)
    mount = compose["x-gateway"]["volumes"][0].split(":")
    assert (COMPOSE_DIR / mount[0]).resolve() == (COMPOSE_DIR / "compose" / "gateway.yaml").resolve()
    assert mount[1] == "/etc/mcp-gateway/gateway.yaml"


def test_compose_services_run_real_commands_of_the_gateway_and_the_example_upstream() -> None:
    services = _compose()["services"]
    for name in ("gateway-1", "gateway-2", "migrate"):
        parsed = build_parser().parse_args(services[name]["command"])
        assert parsed.config == "/etc/mcp-gateway/gateway.yaml"
        assert services[name]["image"].split(":")[0] == "mcp-gateway"
    assert build_parser().parse_args(services["gateway-1"]["command"]).command == "serve"
    assert build_parser().parse_args(services["migrate"]["command"]).command == "migrate"
    upstream = services["upstream"]
    assert upstream["entrypoint"] == ["python", "-m", "upstream_mcp"]
    args = upstream_args(upstream["command"])
    env = _compose_gateway_env()
    assert env["UPSTREAM_MCP_URL"] == f"http://upstream:{args.port}/mcp"
    assert "upstream" in args.allowed_host


def test_the_load_balancer_prometheus_and_grafana_point_at_the_compose_gateways() -> None:
    services = _compose()["services"]
    config = _gateway_config((COMPOSE_DIR / "compose" / "gateway.yaml").read_text(), _compose_gateway_env())
    gateways = {f"{name}:{config.server.port}" for name in services if name.startswith("gateway-")}
    nginx = (COMPOSE_DIR / "compose" / "nginx.conf").read_text()
    assert set(re.findall(r"server (gateway-\d+:\d+)", nginx)) == gateways
    assert "proxy_buffering off" in nginx
    prometheus = yaml.safe_load((ROOT / "config" / "prometheus.yml").read_text())
    scrape = prometheus["scrape_configs"][0]
    assert set(scrape["static_configs"][0]["targets"]) == gateways
    assert scrape["metrics_path"] in _route_paths(config)
    datasource = yaml.safe_load(
        (COMPOSE_DIR / "compose" / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )["datasources"][0]
    dashboard = json.loads((ROOT / "config" / "grafana" / "mcp-gateway.json").read_text())
    panel_sources = {p["datasource"]["uid"] for p in dashboard["panels"] if isinstance(p.get("datasource"), dict)}
    assert panel_sources == {datasource["uid"].replace("$$", "$")}
    grafana_mounts = dict(m.split(":")[:2][::-1] for m in services["grafana"]["volumes"])
    assert (COMPOSE_DIR / grafana_mounts["/var/lib/grafana/dashboards"]).resolve() == (ROOT / "config" / "grafana")


def test_readme_operations_section_points_at_the_manifests() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "deploy/kubernetes" in readme
    assert "deploy/compose.yaml" in readme
    assert "docker compose -f deploy/compose.yaml up --build" in readme
