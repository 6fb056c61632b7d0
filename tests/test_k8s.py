"""deploy/k8s renders with kustomize, validates offline, and says what the code says.

Rendering needs `kubectl` (kustomize built in; part of the machine's base image, not a Python
package): without it the render tests are skipped, saying so. Validation uses kubernetes-validate
(its schemas ship with the wheel: no network) and the KEDA CRDs copied into tests/schemas.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from helpdesk.natsauth import permissions
from helpdesk.sandbox_server import sandbox_environment
from services.okta_worker.app import CMD_DURABLE, POLL_DURABLE
from shared.bus import CMD_STREAM, JOB_STREAM

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
SCHEMAS = ROOT / "tests" / "schemas"
K8S_VERSION = "1.37.0"
SERVICES = {"gateway", "okta-worker", "slack-responder"}
PUBLIC = {"gateway": "/slack/", "telephony-hook": "/telephony/"}

FULL = "production+telephony+tickets+servicemonitor"  # every optional component

needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) is not installed")


@cache
def render(kustomization: str) -> tuple[dict[str, Any], ...]:
    """``kubectl kustomize`` of a directory, or of an overlay written from ``kustomization`` text."""
    path = Path(kustomization)
    result = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def relative(target: Path, start: Path) -> str:
    """kustomize takes only relative paths to other kustomizations."""
    return os.path.relpath(target, start)


def variant(tmp_root: Path, name: str, base: str, components: list[str]) -> str:
    """An overlay on ``base`` with extra components (how an operator picks the options)."""
    directory = tmp_root / name
    directory.mkdir()
    text = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [relative(K8S / base, directory)],
        "components": [relative(K8S / "components" / c, directory) for c in components],
    }
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(text))
    return str(directory)


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict[str, Any], ...]]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl (with kustomize) is not installed")
    tmp = tmp_path_factory.mktemp("overlays")
    production = K8S / "overlays" / "production"
    # The HPA alternative: production without its keda component, plus hpa.
    hpa_dir = tmp / "hpa"
    hpa_dir.mkdir()
    text = yaml.safe_load((production / "kustomization.yaml").read_text())
    text["resources"] = [relative(K8S / "base", hpa_dir)]
    text["components"] = [relative(K8S / "components" / c, hpa_dir) for c in ("hpa", "telephony", "servicemonitor")]
    (hpa_dir / "kustomization.yaml").write_text(yaml.safe_dump(text))
    return {
        "production": render(str(production)),
        "sandbox": render(str(K8S / "overlays" / "sandbox")),
        FULL: render(variant(tmp, "full", "overlays/production", ["telephony", "tickets", "servicemonitor"])),
        "hpa": render(str(hpa_dir)),
    }


def of_kind(docs: tuple[dict[str, Any], ...], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The CRD schema with unknown fields refused (CRDs prune them silently; we want to hear)."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def crd_schema(file: str) -> dict[str, Any]:
    crd = yaml.safe_load((SCHEMAS / file).read_text())
    return strict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


@needs_kubectl
def test_every_overlay_passes_kubernetes_validate_strict(renders: dict[str, tuple[dict[str, Any], ...]]) -> None:
    """Each render validates against Kubernetes' schemas, unknown fields refused (KEDA/Prometheus kinds aside)."""
    checked = 0
    for name, docs in renders.items():
        for doc in docs:
            if doc["apiVersion"].startswith(("keda.sh/", "monitoring.coreos.com/")):
                continue
            try:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']}: {exc}")
            checked += 1
    assert checked > 40


@needs_kubectl
def test_keda_objects_pass_the_crd_schemas(renders: dict[str, tuple[dict[str, Any], ...]]) -> None:
    """ScaledObject and TriggerAuthentication validate against KEDA's CRDs (strict), min ≤ max replicas."""
    scaled_schema = crd_schema("keda-scaledobject-crd.yaml")
    auth_schema = crd_schema("keda-triggerauthentication-crd.yaml")
    docs = renders["production"]
    scaled = of_kind(docs, "ScaledObject")
    auths = of_kind(docs, "TriggerAuthentication")
    assert set(scaled) == {"okta-worker"} and set(auths) == {"helpdesk-nats-monitor"}
    for obj in scaled.values():
        jsonschema.Draft7Validator(scaled_schema).validate(obj)
        assert obj["spec"]["minReplicaCount"] <= obj["spec"].get("maxReplicaCount", 100)
        assert obj["spec"]["scaleTargetRef"]["name"] in of_kind(docs, "Deployment")
    for obj in auths.values():
        jsonschema.Draft7Validator(auth_schema).validate(obj)
        for ref in obj["spec"]["configMapTargetRef"]:
            assert ref["name"] in of_kind(docs, "ConfigMap")
    keda = of_kind(docs, "ConfigMap")["helpdesk-keda"]["data"]
    assert keda["natsServerMonitoringEndpoint"] == "nats-headless.helpdesk.svc.cluster.local:8222"
    assert "://" not in keda["natsServerMonitoringEndpoint"]


@needs_kubectl
def test_scaled_object_watches_the_streams_and_durables_the_code_uses(
    renders: dict[str, tuple[dict[str, Any], ...]],
) -> None:
    """The nats-jetstream triggers name the worker's command and poll consumers, as shared/bus.py and
    services/okta_worker/app.py declare them."""
    triggers = of_kind(renders["production"], "ScaledObject")["okta-worker"]["spec"]["triggers"]
    watched = {(t["metadata"]["stream"], t["metadata"]["consumer"]) for t in triggers}
    assert watched == {(CMD_STREAM.name, CMD_DURABLE), (JOB_STREAM.name, POLL_DURABLE)}
    for trigger in triggers:
        assert trigger["type"] == "nats-jetstream"
        assert trigger["authenticationRef"]["name"] == "helpdesk-nats-monitor"
        assert all(isinstance(v, str) for v in trigger["metadata"].values())  # KEDA wants strings


@needs_kubectl
def test_deployments_are_restricted_probed_and_bounded(renders: dict[str, tuple[dict[str, Any], ...]]) -> None:
    """Every Deployment: non-root uid 10001, read-only root with an emptyDir /tmp, no privilege
    escalation, no capabilities, RuntimeDefault seccomp, no service-account token, probes, limits."""
    for name, docs in renders.items():
        deployments = of_kind(docs, "Deployment")
        assert set(deployments) >= SERVICES, name
        for dep_name, dep in deployments.items():
            pod = dep["spec"]["template"]["spec"]
            where = f"{name}: {dep_name}"
            assert pod["automountServiceAccountToken"] is False, where
            assert pod["securityContext"]["runAsNonRoot"] is True, where
            assert pod["securityContext"]["runAsUser"] == 10001, where
            assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
            for container in pod["containers"]:
                sc = container["securityContext"]
                assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, where
                assert sc["capabilities"]["drop"] == ["ALL"], where
                assert {"cpu", "memory"} <= set(container["resources"]["requests"]), where
                assert {"cpu", "memory"} <= set(container["resources"]["limits"]), where
                assert "readinessProbe" in container and "livenessProbe" in container, where
                if dep_name == "nats":
                    continue
                assert container["readinessProbe"]["httpGet"]["path"] == "/readyz" or dep_name == "sandbox", where
                assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", where
                mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
                assert "/tmp" in mounts, where
                volume = next(v for v in pod["volumes"] if v["name"] == mounts["/tmp"])
                assert "emptyDir" in volume, where


@needs_kubectl
def test_every_service_has_a_pdb_a_service_and_network_policies(
    renders: dict[str, tuple[dict[str, Any], ...]],
) -> None:
    """A PodDisruptionBudget and a Service per app Deployment; a default-deny NetworkPolicy."""
    for name, docs in renders.items():
        deployments = set(of_kind(docs, "Deployment")) - {"nats", "sandbox"}
        assert deployments <= set(of_kind(docs, "PodDisruptionBudget")), name
        assert deployments <= set(of_kind(docs, "Service")), name
        deny = of_kind(docs, "NetworkPolicy")["helpdesk-default-deny"]
        assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny["spec"]


@needs_kubectl
def test_ingress_exposes_only_the_slack_and_okta_routes(renders: dict[str, tuple[dict[str, Any], ...]]) -> None:
    """Paths /slack/ (gateway) and, with the telephony component, /telephony/ (hook), on their http
    ports: never /metrics, /healthz or the metrics port."""
    for name, docs in renders.items():
        services = of_kind(docs, "Service")
        for ingress in of_kind(docs, "Ingress").values():
            for rule in ingress["spec"]["rules"]:
                for path in rule["http"]["paths"]:
                    backend = path["backend"]["service"]
                    assert PUBLIC[backend["name"]] == path["path"], name
                    assert backend["port"] == {"name": "http"}, name
                    assert path["pathType"] == "Prefix"
                    ports = {p["name"]: p["port"] for p in services[backend["name"]]["spec"]["ports"]}
                    assert ports["http"] != ports["metrics"]
    paths = {
        p["path"]
        for ingress in of_kind(renders[FULL], "Ingress").values()
        for rule in ingress["spec"]["rules"]
        for p in rule["http"]["paths"]
    }
    assert paths == {"/slack/", "/telephony/"}


@needs_kubectl
def test_no_secret_value_is_committed_outside_the_sandbox(renders: dict[str, tuple[dict[str, Any], ...]]) -> None:
    """Production renders reference Secrets and never define one; the sandbox's are its public values."""
    for name in ("production", FULL, "hpa"):
        assert of_kind(renders[name], "Secret") == {}, name
    sandbox = of_kind(renders["sandbox"], "Secret")
    assert {n.rsplit("-", 1)[0] for n in sandbox} == {"helpdesk-secrets", "helpdesk-nats-users"}


@needs_kubectl
def test_sandbox_overlay_points_the_services_at_helpdesk_sandbox(
    renders: dict[str, tuple[dict[str, Any], ...]],
) -> None:
    """The sandbox overlay's ConfigMap and Secret carry `helpdesk sandbox`'s own values."""
    import base64

    docs = renders["sandbox"]
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("helpdesk-settings"))
    secret = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].startswith("helpdesk-secrets"))
    values = {**config["data"], **{k: base64.b64decode(v).decode() for k, v in secret["data"].items()}}
    for key, value in sandbox_environment("sandbox").items():
        secret_key = key.lower().replace("_", "-")
        assert values.get(key, values.get(secret_key)) == value, key
    assert "sandbox" in of_kind(docs, "Deployment") and "nats" in of_kind(docs, "Deployment")


@needs_kubectl
def test_components_offer_hpa_and_servicemonitor(renders: dict[str, tuple[dict[str, Any], ...]]) -> None:
    """The HPA alternative scales the worker on CPU without KEDA; the ServiceMonitor scrapes port metrics."""
    hpa = of_kind(renders["hpa"], "HorizontalPodAutoscaler")["okta-worker"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "okta-worker"
    assert of_kind(renders["hpa"], "ScaledObject") == {}
    monitor = of_kind(renders[FULL], "ServiceMonitor")["helpdesk-verify"]
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


@needs_kubectl
def test_each_service_runs_as_its_own_nats_user(renders: dict[str, tuple[dict[str, Any], ...]]) -> None:
    """Every app Deployment connects as the NATS user of its own command, one generated from the code
    (deploy/nats), with that user's key of helpdesk-nats-users as its password."""
    users = set(permissions())
    deployments = of_kind(renders[FULL], "Deployment")
    assert set(deployments) == SERVICES | {"telephony-hook", "audit-sink"}
    for name, dep in deployments.items():
        pod = dep["spec"]["template"]["spec"]
        container = pod["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert container["args"] == [name] and env["NATS_USER"] == name and name in users, name
        password = next(v for v in pod["volumes"] if v["name"] == "nats-password")["secret"]
        assert password["secretName"] == "helpdesk-nats-users" and password["items"][0]["key"] == name, name


@needs_kubectl
def test_the_audit_sink_takes_its_secrets_from_its_own_secret(renders: dict[str, tuple[dict[str, Any], ...]]) -> None:
    """The tickets component's sink reads SERVICENOW_PASSWORD, JIRA_API_TOKEN … from Secret
    helpdesk-audit-sink (keys named as the variables: only those of the systems in use), never from
    the Slack and Okta secrets, and is absent from a production render without the component."""
    sink = of_kind(renders[FULL], "Deployment")["audit-sink"]
    pod = sink["spec"]["template"]["spec"]
    sources = pod["containers"][0]["envFrom"]
    assert {"secretRef": {"name": "helpdesk-audit-sink"}} in sources
    assert any("configMapRef" in source for source in sources)  # helpdesk-settings: the URLs, the users
    assert all(v.get("secret", {}).get("secretName") != "helpdesk-secrets" for v in pod["volumes"])
    assert "audit-sink" not in of_kind(renders["production"], "Deployment")
    assert "audit-sink" in of_kind(renders[FULL], "PodDisruptionBudget")
