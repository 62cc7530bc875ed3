"""The Kubernetes and KServe manifests, offline: every object each kustomization builds is valid for
a named Kubernetes version (its OpenAPI schemas, strict: an unknown field fails) or, for KServe and
Prometheus Operator resources, for the CRD schemas vendored from their releases; and the manifests
agree with the code (probe paths and ports the app serves, env vars that are Settings fields,
a grace period that covers the drain, the image's user)."""

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from unittest import mock

import jsonpatch
import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from conftest import ROOT

KUBERNETES_VERSION = "1.33"
KUBE = ROOT / "deploy" / "kubernetes"
SCHEMAS = KUBE / "schemas"
DOCKERFILE = ROOT / "Dockerfile"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "ecg-service.json"
KUSTOMIZATIONS = ["base", "monitoring", "overlays/requests-in-flight", "kserve/base", "kserve/canary"]
OPERATOR = SCHEMAS / "prometheus-operator"
CRD_SCHEMAS = {  # (group, kind) -> vendored file
    ("serving.kserve.io", "InferenceService"): SCHEMAS / "kserve" / "serving.kserve.io_inferenceservices.json",
    ("monitoring.coreos.com", "ServiceMonitor"): OPERATOR / "monitoring.coreos.com_servicemonitors.json",
    ("monitoring.coreos.com", "PodMonitor"): OPERATOR / "monitoring.coreos.com_podmonitors.json",
}
# Variables that are not the service's settings, and who reads them.
OTHER_ENV = {"NUMBA_CACHE_DIR": "numba (the ODE solver's compiled code)",
             "PROTOCOL": "KServe (the predictor's protocol)"}
READINESS_PATHS = {"/readyz", "/v2/health/ready"}  # the routes that turn 503 while draining
ADAPTER_VALUES = KUBE / "overlays" / "requests-in-flight" / "prometheus-adapter-values.yaml"


# --- rendering: the subset of kustomize these kustomizations use -------------------------------------

def render(folder: Path) -> list[dict]:
    """The objects `kustomize build folder` makes: resources (files and folders), configMapGenerator
    from files without a name hash, and JSON patches (RFC 6902) with a target. Anything else fails,
    so a kustomization never uses a feature this rendering would silently skip."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    beyond = set(kustomization) - {"apiVersion", "kind", "resources", "configMapGenerator", "patches"}
    assert not beyond, f"{folder}: {sorted(beyond)} is beyond what render() reproduces; extend it"
    objects: list[dict] = []
    for entry in kustomization.get("resources", []):
        path = (folder / entry).resolve()
        objects += render(path) if path.is_dir() else [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for generator in kustomization.get("configMapGenerator", []):
        options = generator.get("options", {})
        assert set(generator) <= {"name", "files", "options"} and options.get("disableNameSuffixHash"), generator
        data = {}
        for source in generator["files"]:
            key, _, path = source.rpartition("=")
            data[key or Path(path).name] = (folder / path).read_text()
        metadata = {"name": generator["name"], **({"labels": options["labels"]} if "labels" in options else {})}
        objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data})
    for patch in kustomization.get("patches", []):
        target, operations = patch["target"], yaml.safe_load((folder / patch["path"]).read_text())
        hits = [i for i, o in enumerate(objects) if all(
            (o["apiVersion"].split("/")[0] if key == "group" else o["metadata"]["name"] if key == "name" else o[key])
            == value for key, value in target.items())]
        assert hits, f"{folder}: patch {patch['path']} matches nothing"
        for i in hits:
            objects[i] = jsonpatch.apply_patch(objects[i], operations)
    return objects


def key(obj: dict) -> tuple[str, str, str]:
    return obj["apiVersion"], obj["kind"], obj["metadata"]["name"]


@pytest.fixture(scope="module")
def built() -> dict[str, list[dict]]:
    return {name: render(KUBE / name) for name in KUSTOMIZATIONS}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (its built-in kustomize) not installed")
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_rendering_matches_kustomize(built, name):
    out = subprocess.run(["kubectl", "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(KUBE / name)],
                         capture_output=True, text=True, check=True).stdout
    by_kustomize = {key(o): o for o in yaml.safe_load_all(out) if o}
    assert by_kustomize == {key(o): o for o in built[name]}


# --- schemas -----------------------------------------------------------------------------------------

def strict(schema: dict) -> dict:
    """A CRD schema that refuses unknown fields, as kubernetes-validate's strict schemas do (the API
    server would silently prune them): every object with properties gets additionalProperties false
    unless it keeps unknown fields on purpose."""
    schema = copy.deepcopy(schema)

    def visit(node):
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(schema)
    return schema


@pytest.fixture(scope="module")
def crd_validators() -> dict:
    validators = {}
    for (group, kind), path in CRD_SCHEMAS.items():
        vendored = json.loads(path.read_text())
        assert (vendored["group"], vendored["kind"]) == (group, kind)
        for version, schema in vendored["versions"].items():
            validators[f"{group}/{version}", kind] = jsonschema.Draft7Validator(strict(schema))
    return validators


def schema_errors(obj: dict, crd_validators: dict) -> list[str]:
    """Why obj is invalid (empty if it is valid): against the vendored CRD schema of its kind, or
    the Kubernetes OpenAPI schemas of KUBERNETES_VERSION (strict) for built-in kinds."""
    validator = crd_validators.get((obj["apiVersion"], obj["kind"]))
    if validator is not None:
        return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        return [f"{'.'.join(map(str, err.path))}: {err.message}"]
    return []


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_object_is_valid(built, crd_validators, name):
    assert built[name]
    for obj in built[name]:
        assert not schema_errors(obj, crd_validators), (key(obj), schema_errors(obj, crd_validators))


@pytest.mark.parametrize("kustomization,kind,operation", [
    ("base", "Deployment", {"op": "add", "path": "/spec/template/spec/containers/0/livenessProbe/httpGett",
                            "value": {"path": "/healthz", "port": 8000}}),
    ("base", "HorizontalPodAutoscaler", {"op": "replace", "path": "/spec/minReplicas", "value": "two"}),
    ("kserve/base", "InferenceService", {"op": "add", "path": "/spec/predictor/canaryTrafficPercnt", "value": 10}),
    ("monitoring", "ServiceMonitor", {"op": "add", "path": "/spec/endpoints/0/intervall", "value": "15s"}),
])
def test_validation_refuses_a_misspelt_field_or_a_wrong_type(built, crd_validators, kustomization, kind, operation):
    obj = next(o for o in built[kustomization] if o["kind"] == kind)
    assert not schema_errors(obj, crd_validators)
    assert schema_errors(jsonpatch.apply_patch(obj, [operation]), crd_validators)


# --- consistency with the code -----------------------------------------------------------------------

class Code:
    """What the manifests must agree with: the app's GET routes, the Settings fields, the metrics the
    service exports and the image's user, read from the code as it is."""

    def __init__(self):
        from service.app import create_app
        from service.metrics import ServiceMetrics
        from service.settings import Settings

        self.settings_class = Settings
        paths = create_app(Settings()).openapi()["paths"]  # every route the app serves, as it documents them
        self.get_routes = {path for path, operations in paths.items() if "get" in operations}
        self.fields = set(Settings.model_fields)
        self.metrics = {metric.name for metric in ServiceMetrics().registry.collect()}
        dockerfile = DOCKERFILE.read_text()
        self.image_uid = int(re.search(r"useradd\b[^\n]*--uid[ =](\d+)", dockerfile).group(1))
        instructions = dockerfile.replace("\\\n", " ")  # continuation lines joined
        self.image_env = dict(re.findall(r"\b(\w+)=(\S+)", " ".join(re.findall(r"^ENV (.*)$", instructions, re.M))))

    def settings(self, env: dict[str, str]):
        """Settings as the service reads them from exactly these ECG_ variables (no .env file)."""
        clean = {k: v for k, v in os.environ.items() if not k.startswith("ECG_")}
        with mock.patch.dict(os.environ, {**clean, **env}, clear=True):
            return self.settings_class(_env_file=None)


@pytest.fixture(scope="module")
def code() -> Code:
    return Code()


def workloads(objects: list[dict]):
    """(name, pod spec, grace period seconds, pod labels) of each Deployment and InferenceService
    predictor; Knative gives a revision's pods its request timeout as their grace period."""
    for obj in objects:
        if obj["kind"] == "Deployment":
            template = obj["spec"]["template"]
            pod = template["spec"]
            grace = pod.get("terminationGracePeriodSeconds", 30)
            yield obj["metadata"]["name"], pod, grace, template["metadata"]["labels"]
        elif obj["kind"] == "InferenceService":
            pod = obj["spec"]["predictor"]
            labels = {"serving.kserve.io/inferenceservice": obj["metadata"]["name"]}
            yield obj["metadata"]["name"], pod, pod.get("timeout", 300), labels


def find(objects: list[dict], kind: str, name: str) -> dict | None:
    return next((o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name), None)


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def container_env(container: dict, objects: list[dict]) -> tuple[dict[str, str], list[str]]:
    """The container's variables (envFrom ConfigMaps and Secrets, then env) and what is missing."""
    env, problems = {}, []
    for source in container.get("envFrom", []):
        kind = "ConfigMap" if "configMapRef" in source else "Secret"
        ref = source["configMapRef" if kind == "ConfigMap" else "secretRef"]
        found = find(objects, kind, ref["name"])
        if found is None:
            if not ref.get("optional"):
                problems.append(f"{kind} {ref['name']} (envFrom) is not in the manifests")
            continue
        env.update(found.get("data", {}), **found.get("stringData", {}))
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env, problems


SECURE = {"runAsNonRoot": True, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
          "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def container_problems(where: str, container: dict, pod: dict, grace: float, objects: list[dict],
                       code: Code) -> list[str]:
    """A server container against the code: its variables, port, probes, shutdown timing, user,
    security context and writable paths."""
    env, problems = container_env(container, objects)
    problems = [f"{where}: {m}" for m in problems]
    for variable in env:
        if variable.startswith("ECG_") and variable[4:].lower() not in code.fields:
            problems.append(f"{where}: {variable} is not a Settings field")
        elif not variable.startswith("ECG_") and variable not in OTHER_ENV:
            problems.append(f"{where}: {variable} is read by nothing the image runs")
    try:
        image = {k: v for k, v in code.image_env.items() if k.startswith("ECG_")}  # what the manifests do not set
        settings = code.settings({**image, **{k: v for k, v in env.items() if k.startswith("ECG_")}})
    except ValidationError as err:
        return problems + [f"{where}: the settings do not validate: {err}"]
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    if settings.port not in ports.values():
        problems.append(f"{where}: the service listens on {settings.port}, "
                        f"not a container port {sorted(ports.values())}")
    for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
        http = container.get(probe_name, {}).get("httpGet")
        if http is None:
            problems.append(f"{where}: no HTTP {probe_name}")
            continue
        if http["path"] not in code.get_routes:
            problems.append(f"{where}: {probe_name} path {http['path']} is not a GET route of the app")
        if (probe_name == "readinessProbe") != (http["path"] in READINESS_PATHS):
            problems.append(f"{where}: {probe_name} probes {http['path']}")
        port = ports.get(http["port"], http["port"]) if "port" in http else settings.port
        if port != settings.port:
            problems.append(f"{where}: {probe_name} port {http['port']} is not the service's port {settings.port}")
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    if pre_stop + settings.shutdown_delay_s + settings.drain_timeout_s > grace:
        problems.append(f"{where}: preStop {pre_stop} s + ECG_SHUTDOWN_DELAY_S {settings.shutdown_delay_s:g} + "
                        f"ECG_DRAIN_TIMEOUT_S {settings.drain_timeout_s:g} exceed the grace period {grace} s")
    security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    if security.get("runAsUser") != code.image_uid:
        problems.append(f"{where}: runAsUser {security.get('runAsUser')} is not the image's user {code.image_uid}")
    problems += [f"{where}: securityContext {k} is {security.get(k)}, not {v}"
                 for k, v in SECURE.items() if security.get(k) != v]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    writes = {"temporary files": env.get("TMPDIR", "/tmp"),
              "NUMBA_CACHE_DIR": env.get("NUMBA_CACHE_DIR", code.image_env.get("NUMBA_CACHE_DIR", "/tmp"))}
    for what, path in writes.items():
        on = [m for m in mounts if path == m or path.startswith(m.rstrip("/") + "/")]
        if not on or "emptyDir" not in volumes.get(mounts[on[0]], {}):
            problems.append(f"{where}: {what} ({path}) is on the read-only root filesystem")
    return problems


def selection_problems(objects: list[dict], code: Code) -> list[str]:
    """Services, budgets, policies, monitors and autoscalers against the pods and the routes."""
    problems = []
    pods = [(pod, labels) for _, pod, _, labels in workloads(objects)]
    container_ports = [p for pod, _ in pods for c in pod["containers"] for p in c.get("ports", [])]
    for obj in objects:
        kind, spec, name = obj["kind"], obj.get("spec", {}), obj["metadata"]["name"]
        if kind == "Service":
            if not any(selects(spec["selector"], labels) for _, labels in pods):
                problems.append(f"Service {name} selects no pod")
            names = {p.get("name") for p in container_ports}
            problems += [f"Service {name}: targetPort {p['targetPort']} is no container port" for p in spec["ports"]
                         if isinstance(p["targetPort"], str) and p["targetPort"] not in names]
        if kind in ("PodDisruptionBudget", "NetworkPolicy"):
            selector = spec["selector" if kind == "PodDisruptionBudget" else "podSelector"]["matchLabels"]
            if not any(selects(selector, labels) for _, labels in pods):
                problems.append(f"{kind} {name} selects no pod")
        if kind == "PodMonitor":
            for endpoint in spec["podMetricsEndpoints"]:
                if endpoint.get("portNumber") not in {p["containerPort"] for p in container_ports}:
                    problems.append(f"PodMonitor {name}: port {endpoint.get('portNumber')} is no container port")
                if endpoint["path"] not in code.get_routes:
                    problems.append(f"PodMonitor {name}: {endpoint['path']} is not a route")
        if kind == "HorizontalPodAutoscaler":
            target = spec["scaleTargetRef"]
            if find(objects, target["kind"], target["name"]) is None:
                problems.append(f"HorizontalPodAutoscaler {name} scales {target['name']}, which is not here")
            for metric in spec["metrics"]:
                if metric["type"] == "Pods" and metric["pods"]["metric"]["name"] not in code.metrics:
                    problems.append(f"HorizontalPodAutoscaler {name}: the service exports no "
                                    f"{metric['pods']['metric']['name']}")
        if kind == "ServiceMonitor":
            services = [o for o in objects if o["kind"] == "Service"] or [
                o for o in render(KUBE / "base") if o["kind"] == "Service"]  # the Service it scrapes is in the base
            service = next((s for s in services
                            if selects(spec["selector"]["matchLabels"], s["metadata"]["labels"])), None)
            if service is None:
                problems.append(f"ServiceMonitor {name} selects no Service")
                continue
            for endpoint in spec["endpoints"]:
                if endpoint["port"] not in {p.get("name") for p in service["spec"]["ports"]}:
                    problems.append(f"ServiceMonitor {name}: port {endpoint['port']} is not a port of Service "
                                    f"{service['metadata']['name']}")
                if endpoint.get("path", "/metrics") not in code.get_routes:
                    problems.append(f"ServiceMonitor {name}: {endpoint.get('path')} is not a route")
    return problems


def consistency_problems(objects: list[dict], code: Code) -> list[str]:
    """Where the manifests disagree with the code; empty when they agree."""
    problems = []
    for name, pod, grace, _ in workloads(objects):
        for container in pod["containers"]:
            problems += container_problems(f"{name}/{container['name']}", container, pod, grace, objects, code)
    return problems + selection_problems(objects, code)


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_manifests_agree_with_the_code(built, code, name):
    assert consistency_problems(built[name], code) == []


def test_the_checks_read_the_app_and_settings(code):
    assert {"/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"} <= code.get_routes
    assert {"port", "shutdown_delay_s", "drain_timeout_s", "api_keys"} <= code.fields
    assert "ecg_http_requests_in_flight" in code.metrics


@pytest.mark.parametrize("kustomization,kind,operations,complaint", [
    ("base", "Deployment", [{"op": "replace", "path": "/spec/template/spec/containers/0/readinessProbe/httpGet/path",
                             "value": "/ready"}], "readinessProbe path /ready is not a GET route"),
    ("kserve/base", "InferenceService",
     [{"op": "replace", "path": "/spec/predictor/containers/0/livenessProbe/httpGet/path", "value": "/v2/health/alive"}],
     "livenessProbe path /v2/health/alive"),
    ("base", "Deployment", [{"op": "replace", "path": "/spec/template/spec/containers/0/livenessProbe/httpGet/path",
                             "value": "/readyz"}], "livenessProbe probes /readyz"),
    ("base", "ConfigMap", [{"op": "move", "from": "/data/ECG_DRAIN_TIMEOUT_S", "path": "/data/ECG_DRAIN_TIMEOUT"}],
     "ECG_DRAIN_TIMEOUT is not a Settings field"),
    ("kserve/base", "InferenceService", [{"op": "replace", "path": "/spec/predictor/containers/0/env/1/name",
                                          "value": "ECG_LISTEN_HOST"}], "ECG_LISTEN_HOST is not a Settings field"),
    ("base", "ConfigMap", [{"op": "replace", "path": "/data/ECG_DRAIN_TIMEOUT_S", "value": "soon"}],
     "the settings do not validate"),
    ("base", "ConfigMap", [{"op": "replace", "path": "/data/ECG_PORT", "value": "9000"}],
     "listens on 9000, not a container port"),
    ("base", "Deployment", [{"op": "replace", "path": "/spec/template/spec/containers/0/ports/0/name", "value": "web"}],
     "readinessProbe port http is not the service's port"),
    ("base", "Deployment",
     [{"op": "replace", "path": "/spec/template/spec/terminationGracePeriodSeconds", "value": 30}],
     "exceed the grace period 30 s"),
    ("base", "Deployment", [{"op": "replace", "path": "/spec/template/spec/securityContext/runAsUser", "value": 1000}],
     "runAsUser 1000 is not the image's user 10001"),
    ("base", "Deployment", [{"op": "remove", "path": "/spec/template/spec/containers/0/volumeMounts/0"}],
     "(/tmp) is on the read-only root filesystem"),
    ("base", "Deployment", [{"op": "replace", "path": "/spec/template/spec/containers/0/env/0/value",
                             "value": "/var/cache/numba"}], "NUMBA_CACHE_DIR (/var/cache/numba) is on the read-only"),
    ("base", "Service", [{"op": "replace", "path": "/spec/selector", "value": {"app": "ecg-api"}}],
     "Service ecg-api selects no pod"),
    ("base", "Service", [{"op": "replace", "path": "/spec/ports/0/targetPort", "value": "api"}],
     "targetPort api is no container port"),
    ("overlays/requests-in-flight", "HorizontalPodAutoscaler",
     [{"op": "replace", "path": "/spec/metrics/0/pods/metric/name", "value": "ecg_requests_in_flight"}],
     "exports no ecg_requests_in_flight"),
    ("monitoring", "ServiceMonitor", [{"op": "replace", "path": "/spec/endpoints/0/path", "value": "/prometheus"}],
     "/prometheus is not a route"),
])
def test_the_checks_fail_on_a_renamed_path_variable_or_port(built, code, kustomization, kind, operations, complaint):
    objects = copy.deepcopy(built[kustomization])
    i = next(i for i, o in enumerate(objects) if o["kind"] == kind)
    objects[i] = jsonpatch.apply_patch(objects[i], operations)
    problems = consistency_problems(objects, code)
    assert any(complaint in p for p in problems), problems


def test_dashboard_configmap_is_the_shipped_dashboard(built):
    dashboard = find(built["monitoring"], "ConfigMap", "ecg-grafana-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["data"] == {"ecg-service.json": DASHBOARD.read_text()}
    json.loads(dashboard["data"]["ecg-service.json"])


def test_custom_metric_autoscaling_matches_the_adapter_rule(built, code):
    hpa = find(built["overlays/requests-in-flight"], "HorizontalPodAutoscaler", "ecg-api")
    names = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
    rules = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]
    served = {rule["name"]["as"] for rule in rules}
    assert names and names <= served
    for rule in rules:
        series = re.match(r"(\w+)\{", rule["seriesQuery"]).group(1)
        assert series in code.metrics
        assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}  # the labels the operator's scrape adds


def test_kserve_predictor_speaks_v2_with_a_canary(built):
    stable = find(built["kserve/base"], "InferenceService", "ecg")
    canary = find(built["kserve/canary"], "InferenceService", "ecg")
    env = {e["name"]: e.get("value") for e in stable["spec"]["predictor"]["containers"][0]["env"]}
    assert env["PROTOCOL"] == "v2"
    assert "canaryTrafficPercent" not in stable["spec"]["predictor"]
    assert 0 < canary["spec"]["predictor"]["canaryTrafficPercent"] < 100
    images = [isvc["spec"]["predictor"]["containers"][0]["image"] for isvc in (stable, canary)]
    assert images[0] != images[1]


def test_the_base_leaves_the_kserve_pods_alone(built):
    """KServe copies an InferenceService's labels to its pods: in a namespace holding both, the
    base's Service, budget and NetworkPolicy must not take the predictor's pods for theirs."""
    isvc = find(built["kserve/base"], "InferenceService", "ecg")
    pod_labels = {**isvc["metadata"]["labels"], "serving.kserve.io/inferenceservice": "ecg"}
    selectors = {"Service": lambda spec: spec["selector"],
                 "PodDisruptionBudget": lambda spec: spec["selector"]["matchLabels"],
                 "NetworkPolicy": lambda spec: spec["podSelector"]["matchLabels"]}
    for obj in built["base"]:
        if obj["kind"] in selectors:
            assert not selects(selectors[obj["kind"]](obj["spec"]), pod_labels), key(obj)
