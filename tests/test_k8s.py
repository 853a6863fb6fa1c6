"""The Kubernetes deployment in k8s/, checked offline.

1. Every kustomization renders with `kubectl kustomize` (tests/k8s_manifests.py); every core object
   passes `kubernetes-validate --strict` for the oldest Kubernetes version supported and the newest
   one it bundles (a warning fails too); the ServiceMonitor and PrometheusRule pass the Prometheus
   Operator's pydantic models (cloudcoil-models-prometheus-operator), unknown fields included.
2. What schemas miss: selectors match pod labels, probes and ports agree with what the service
   serves, the HPA targets the Deployment, threads match CPU limits, the GPU overlay asks for a
   GPU, the Job is Indexed with TEXTCLS_NUM_SHARDS = completions, pods are non-root with a
   read-only root filesystem, settings pass the service's own validation.
3. The rules: `promtool check rules`, and `promtool test rules` proving each alert fires on a
   synthetic series and stays quiet on a healthy one; every PromQL expression of the rules and of
   the Grafana dashboard parses (promql-parser) and names only metrics the service exports.
4. A served Bento, run as the Deployment runs it (read-only Bento directory, the container's
   environment, BENTOML_HOME on a writable directory): its probe paths answer, `promtool check
   metrics` accepts its /metrics, and every metric and label the rules and dashboard read is on it.

kubectl and promtool are not Python packages: when one is missing the tests that need it fail,
naming it (CI installs both), rather than skip.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml
from k8s_manifests import K8S, ROOT, kubectl, prometheus_rule_groups, render
from processes import free_port, serving

BENTOML = Path(sys.executable).with_name("bentoml")

# The oldest Kubernetes release these manifests support: the first where everything they use is
# on by default (the Indexed Job's backoffLimitPerIndex went beta, on by default, in 1.29).
# docs/deploy.md#kubernetes-versions says why; keep the two in step (a test checks).
OLDEST_KUBERNETES = "1.29"

BASE = "k8s/base"
OVERLAYS = {"cpu": "k8s/overlays/cpu", "gpu": "k8s/overlays/gpu"}
JOB = "k8s/jobs/batch-score"
MERGE = "k8s/jobs/batch-score/merge"
DATA = "k8s/jobs/batch-score/data"
DASHBOARDS = "k8s/dashboards"
TARGETS = [BASE, *OVERLAYS.values(), JOB, MERGE, DATA, DASHBOARDS]
DASHBOARD_JSON = K8S / "dashboards" / "textcls.json"

CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
POD_TEMPLATE_KINDS = {"Deployment", "Job"}
SERVER_PORT = 3000  # what `bentoml serve` listens on unless told otherwise
PROBE_PATHS = {"/livez", "/readyz"}  # BentoML's, docs/service.md

# BentoML's own metric the rules read (its outermost middleware counts every answer, 503 and 504
# included), with its labels as /metrics shows them; the live test below checks both exist.
BENTOML_SERIES = {
    "bentoml_service_request_total": {"endpoint", "http_response_code", "service_name",
                                      "runner_name", "service_version"},
}
# Labels Prometheus (Operator) adds to every scraped series.
TARGET_LABELS = {"namespace", "job", "instance", "pod", "service", "container", "endpoint"}


# --- helpers ---------------------------------------------------------------------------------

def objects(target: str, kind: str | None = None) -> list[dict]:
    docs = render(target)
    return [d for d in docs if kind is None or d["kind"] == kind]


def one(target: str, kind: str, name: str | None = None) -> dict:
    found = [d for d in objects(target, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"{target}: expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_spec(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"] if obj["kind"] in POD_TEMPLATE_KINDS else obj["spec"]


def containers(obj: dict, *, init: bool = True) -> list[dict]:
    spec = pod_spec(obj)
    return [*(spec.get("initContainers", []) if init else []), *spec["containers"]]


def matches(selector: dict, labels: dict) -> bool:
    """Whether a label selector (matchLabels/matchExpressions, or a plain map) selects labels."""
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def cpu_cores(quantity: str | float) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def tool(name: str, package: str) -> str:
    """A command-line tool the test needs; fails (never skips) naming what to install."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not installed: install {package}. CI installs it (.ci/run); "
                    "these tests fail rather than skip without it.")
    return path


def promtool() -> str:
    return tool("promtool", "Debian's `prometheus` package (apt-get install prometheus)")


def score_and_merge() -> tuple[dict, dict]:
    return one(JOB, "Job", "textcls-batch-score"), one(MERGE, "Job", "textcls-batch-merge")


# --- 1. rendering and schemas ----------------------------------------------------------------

def test_kubectl_with_kustomize_v5_is_there():
    try:
        kubectl()
    except Exception as exc:  # ToolMissing: say what to install, and fail
        pytest.fail(str(exc))


@pytest.mark.parametrize("target", TARGETS)
def test_every_kustomization_renders(target):
    docs = render(target)
    assert docs, f"{target} renders nothing"
    keys = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys)), f"{target} renders duplicates: {keys}"
    for doc in docs:
        labels = doc["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "textcls", (target, doc["kind"])


@pytest.mark.parametrize("target", [*OVERLAYS.values(), JOB, MERGE, DATA])
def test_deployable_targets_name_their_namespace(target):
    namespaces = {d["metadata"].get("namespace") for d in render(target)}
    assert namespaces == {"textcls"}, f"{target}: {namespaces}"


def newest_bundled_kubernetes() -> str:
    from kubernetes_validate.utils import latest_version

    return latest_version()


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, "newest"])
def test_core_objects_pass_kubernetes_validate_strict(version, tmp_path):
    version = newest_bundled_kubernetes() if version == "newest" else version
    files, count = [], 0
    for i, target in enumerate(TARGETS):
        core = [d for d in render(target) if d["kind"] not in CRD_KINDS]
        count += len(core)
        path = tmp_path / f"{i}-{target.replace('/', '_')}.yaml"
        path.write_text(yaml.safe_dump_all(core, sort_keys=False))
        files.append(str(path))
    result = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", version, *files],
        capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    problems = [line for line in output.splitlines() if not line.startswith("INFO")]
    assert result.returncode == 0 and not problems, "\n".join(problems) or output[-3000:]
    passed = [line for line in output.splitlines() if line.startswith("INFO") and "passed" in line]
    assert len(passed) == count, output[-3000:]


def unknown_fields(given, dumped, path="") -> list[str]:
    """Keys present in the manifest but dropped by the model (pydantic ignores extras)."""
    if isinstance(given, dict) and isinstance(dumped, dict):
        out = []
        for key, value in given.items():
            if key not in dumped:
                out.append(f"{path}.{key}")
            else:
                out += unknown_fields(value, dumped[key], f"{path}.{key}")
        return out
    if isinstance(given, list) and isinstance(dumped, list):
        return [p for i, (g, d) in enumerate(zip(given, dumped)) for p in
                unknown_fields(g, d, f"{path}[{i}]")]
    return []


@pytest.mark.parametrize("target", [BASE, *OVERLAYS.values()])
def test_servicemonitor_and_prometheusrule_pass_the_operator_models(target):
    from cloudcoil.models.prometheus_operator import v1

    models = {"ServiceMonitor": v1.ServiceMonitor, "PrometheusRule": v1.PrometheusRule}
    found = [d for d in render(target) if d["kind"] in models]
    assert sorted(d["kind"] for d in found) == sorted(models), target
    for doc in found:
        assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        model = models[doc["kind"]].model_validate(doc)  # raises on a bad type or pattern
        dumped = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
        extra = unknown_fields(doc, dumped)
        assert not extra, f"{doc['kind']}: fields the Prometheus Operator does not know: {extra}"


def test_rendered_rules_are_the_rules_file():
    rendered = one(BASE, "PrometheusRule")["spec"]["groups"]
    assert rendered == prometheus_rule_groups()
    assert one(OVERLAYS["cpu"], "PrometheusRule")["spec"]["groups"] == rendered


# --- 2. what the schemas miss ----------------------------------------------------------------

@pytest.fixture(params=sorted(OVERLAYS))
def overlay(request) -> str:
    return OVERLAYS[request.param]


def server(target: str) -> tuple[dict, dict, dict]:
    """The Deployment, its pod template's labels and its serving container."""
    deployment = one(target, "Deployment", "textcls")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    (container,) = [c for c in containers(deployment, init=False) if c["name"] == "textcls"]
    return deployment, labels, container


def test_selectors_match_the_pod_labels(overlay):
    deployment, labels, _ = server(overlay)
    assert matches(deployment["spec"]["selector"], labels)
    service = one(overlay, "Service", "textcls")
    assert matches(service["spec"]["selector"], labels)
    assert matches(one(overlay, "PodDisruptionBudget")["spec"]["selector"], labels)
    assert matches(one(overlay, "NetworkPolicy")["spec"]["podSelector"], labels)
    for spread in pod_spec(deployment).get("topologySpreadConstraints", []):
        assert matches(spread["labelSelector"], labels)
    monitor = one(overlay, "ServiceMonitor")
    assert matches(monitor["spec"]["selector"], service["metadata"]["labels"])
    # the batch pods are not servers: no Service, budget or policy of the server selects them
    score, merge = score_and_merge()
    for job in (score, merge):
        job_labels = job["spec"]["template"]["metadata"]["labels"]
        assert not matches(service["spec"]["selector"], job_labels)
        assert not matches(one(overlay, "PodDisruptionBudget")["spec"]["selector"], job_labels)


def test_probes_and_ports_agree_with_the_service(overlay):
    _, _, container = server(overlay)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": SERVER_PORT}
    # the image's entrypoint runs `bentoml serve ARGS $BENTO_PATH`: the port it is told
    args = container["args"]
    assert args[0] == "serve" and int(args[args.index("--port") + 1]) == SERVER_PORT
    probes = {kind: container[kind] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    for kind, probe in probes.items():
        get = probe["httpGet"]
        assert get["path"] in PROBE_PATHS, (kind, get)
        assert ports.get(get["port"], get["port"]) == SERVER_PORT, (kind, get)
    assert probes["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # the startup probe covers model load and warm-up: ready, not merely alive
    startup = probes["startupProbe"]
    assert startup["httpGet"]["path"] == "/readyz"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    service = one(overlay, "Service", "textcls")
    (port,) = service["spec"]["ports"]
    assert ports.get(port["targetPort"], port["targetPort"]) == SERVER_PORT
    monitor = one(overlay, "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == port["name"], "the ServiceMonitor must name the Service's port"
    assert endpoint["path"] == "/metrics"
    # the rules read BentoML's `endpoint` label, which the operator's target label would rename
    assert endpoint.get("honorLabels") is True
    ingress_ports = [p["port"] for rule in one(overlay, "NetworkPolicy")["spec"]["ingress"]
                     for p in rule["ports"]]
    assert all(ports.get(p, p) == SERVER_PORT for p in ingress_ports)


def test_the_pod_drains_before_it_stops(overlay):
    deployment, _, container = server(overlay)
    pause = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    seconds = int(pause[1])
    assert 5 <= seconds <= 30
    grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
    # after the pause, the service drains for at most TEXTCLS_SHUTDOWN_GRACE_SECONDS
    # (service/lifecycle.py), then BentoML stops in about a second; SIGKILL must not come first
    (source,) = container["envFrom"]
    drain = float(one(overlay, "ConfigMap", source["configMapRef"]["name"])["data"]
                  ["TEXTCLS_SHUTDOWN_GRACE_SECONDS"])
    assert drain >= 10, "the drain must outlast a batch at the latency bound"
    assert grace >= seconds + drain + 5, (grace, seconds, drain)
    strategy = deployment["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


def test_hpa_owns_the_deployment_and_the_budget_leaves_one_serving(overlay):
    deployment, _, _ = server(overlay)
    hpa = one(overlay, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1", "Deployment", deployment["metadata"]["name"])
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    pdb = one(overlay, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]


def pod_security_problems(obj: dict) -> list[str]:
    """Pod Security Standards "restricted", plus a read-only root filesystem."""
    spec, name = pod_spec(obj), obj["metadata"]["name"]
    pod_sc = spec.get("securityContext", {})
    problems = []
    if spec.get("automountServiceAccountToken") is not False:
        problems.append(f"{name}: mounts a service account token it does not need")
    if pod_sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append(f"{name}: no RuntimeDefault seccomp profile")
    for c in containers(obj):
        sc = {**pod_sc, **c.get("securityContext", {})}
        where = f"{name}/{c['name']}"
        if sc.get("runAsNonRoot") is not True or not sc.get("runAsUser"):
            problems.append(f"{where}: not a numeric non-root user")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{where}: capabilities not dropped")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: writable root filesystem")
        resources = c.get("resources", {})
        for kind in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in resources.get(kind, {}):
                    problems.append(f"{where}: no {resource} {kind[:-1]}")
    return problems


@pytest.mark.reliability  # the security part of issue 12 (docs/deploy.md#filesystem-and-security)
@pytest.mark.parametrize("target", [*OVERLAYS.values(), JOB, MERGE, DATA])
def test_pods_run_non_root_read_only_with_requests_and_limits(target):
    pods = [d for d in render(target) if d["kind"] in POD_TEMPLATE_KINDS | {"Pod"}]
    assert pods
    problems = [p for obj in pods for p in pod_security_problems(obj)]
    assert not problems, problems


@pytest.mark.reliability
def test_the_pods_run_as_the_bento_images_user_and_write_only_to_empty_dirs():
    from service.internals import bento_image_layout

    BENTO_PATH, BENTO_UID_GID = bento_image_layout()
    for target in [*OVERLAYS.values(), JOB, MERGE]:
        for obj in render(target):
            if obj["kind"] not in POD_TEMPLATE_KINDS:
                continue
            spec = pod_spec(obj)
            assert spec["securityContext"]["runAsUser"] == BENTO_UID_GID, target
            assert spec["securityContext"]["runAsGroup"] == BENTO_UID_GID, target
            volumes = {v["name"]: v for v in spec["volumes"]}
            for c in containers(obj):
                mounts = {m["mountPath"]: volumes[m["name"]] for m in c.get("volumeMounts", [])}
                assert "emptyDir" in mounts.get("/tmp", {}), (target, c["name"])
                home = env_of(c).get("BENTOML_HOME", {}).get("value")
                assert home and "emptyDir" in mounts.get(home, {}), (target, c["name"], home)
                assert not home.startswith(BENTO_PATH), "BentoML's home would hide the Bento"
                if c["name"] in ("score", "merge"):
                    assert c["workingDir"] == f"{BENTO_PATH}/src"  # python -m textcls.cli


def check_threads_match_cpu_limit(container: dict) -> None:
    cores = cpu_cores(container["resources"]["limits"]["cpu"])
    assert cores == int(cores), f"{container['name']}: give whole cores, not {cores}"
    assert cpu_cores(container["resources"]["requests"]["cpu"]) == cores  # Guaranteed QoS
    threads = env_of(container).get("TEXTCLS_THREADS")
    assert threads, f"{container['name']} does not set TEXTCLS_THREADS"
    if "value" in threads:
        assert int(threads["value"]) == cores
    else:
        ref = threads["valueFrom"]["resourceFieldRef"]
        assert ref["resource"] == "limits.cpu"
        assert ref.get("containerName", container["name"]) == container["name"]
        assert str(ref.get("divisor", "1")) == "1"


def test_threads_match_the_cpu_limit(overlay):
    _, _, container = server(overlay)
    check_threads_match_cpu_limit(container)
    score, _ = score_and_merge()
    (scorer,) = [c for c in containers(score, init=False) if c["name"] == "score"]
    check_threads_match_cpu_limit(scorer)


def test_settings_come_from_a_configmap_the_service_accepts(overlay):
    from service.settings import ENV_PREFIX, ServiceSettings, env_name

    _, _, container = server(overlay)
    (source,) = container["envFrom"]
    name = source["configMapRef"]["name"]
    data = one(overlay, "ConfigMap", name)["data"]
    known = {env_name(field): field for field in ServiceSettings.model_fields}
    unknown = sorted(set(data) - set(known))
    assert not unknown, f"not service settings (docs/service.md#settings): {unknown}"
    assert "TEXTCLS_THREADS" not in data, "the container derives threads from its CPU limit"
    # the very validation `bentoml serve` runs at start-up
    settings = ServiceSettings(**{known[key]: value for key, value in data.items()})
    assert settings.device == ("cuda" if overlay.endswith("gpu") else "cpu")
    literal = {k for k in env_of(container) if k.startswith(ENV_PREFIX)}
    assert literal <= {"TEXTCLS_THREADS"}, "settings belong in the ConfigMap"


def test_the_gpu_overlay_asks_for_a_gpu_and_the_gpu_image():
    _, _, gpu = server(OVERLAYS["gpu"])
    assert int(gpu["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert gpu["resources"]["requests"]["nvidia.com/gpu"] == gpu["resources"]["limits"]["nvidia.com/gpu"]
    assert gpu["image"].split("/")[-1].split(":")[0] == "textcls-gpu"
    tolerations = pod_spec(one(OVERLAYS["gpu"], "Deployment"))["tolerations"]
    assert any(t["key"] == "nvidia.com/gpu" for t in tolerations)
    _, _, cpu = server(OVERLAYS["cpu"])
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"]
    assert cpu["image"].split("/")[-1].split(":")[0] == "textcls"


def test_the_batch_job_is_indexed_with_one_shard_per_completion():
    score, merge = score_and_merge()
    spec = score["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] >= 1 and 1 <= spec["parallelism"] <= spec["completions"]
    assert pod_spec(score)["restartPolicy"] == "Never"
    (scorer,) = [c for c in containers(score, init=False)]
    assert int(env_of(scorer)["TEXTCLS_NUM_SHARDS"]["value"]) == spec["completions"]
    command = scorer["command"]
    assert command[:4] == ["python", "-m", "textcls.cli", "score"]
    source, output = command[4], command[command.index("-o") + 1]
    assert source.startswith("/data/in/") and output.startswith("/data/out/")
    assert command[command.index("--task") + 1] in ("sentiment", "topic")
    # the merge joins exactly those shards into that output
    (merger,) = containers(merge, init=False)
    assert merger["command"][:5] == ["python", "-m", "textcls.cli", "score-merge", output]
    assert int(merger["command"][merger["command"].index("--num-shards") + 1]) == spec["completions"]
    # both read and write the same volume at /data, the PersistentVolumeClaim the Job ships
    claim = one(JOB, "PersistentVolumeClaim")
    for job, container in ((score, scorer), (merge, merger)):
        volumes = {v["name"]: v for v in pod_spec(job)["volumes"]}
        data = [m for m in container["volumeMounts"] if m["mountPath"] == "/data"]
        assert len(data) == 1 and not data[0].get("readOnly")
        assert volumes[data[0]["name"]]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    data_pod = one(DATA, "Pod")
    assert data_pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]


def test_the_jobs_leave_bento_path_to_the_image():
    # the scorer finds the models packed into the Bento under $BENTO_PATH/models, the path the
    # image's Dockerfile sets (engine.bundle.resolve_bundle); BentoML's home is an emptyDir
    for job in score_and_merge():
        for container in containers(job):
            assert "BENTO_PATH" not in env_of(container)


def test_the_jobs_use_the_cpu_overlays_image():
    _, _, cpu = server(OVERLAYS["cpu"])
    for job in score_and_merge():
        assert {c["image"] for c in containers(job)} == {cpu["image"]}


# --- 3. rules and dashboard ------------------------------------------------------------------

def series_labels() -> dict[str, set[str]]:
    """Every series name the service exports, with its labels (service/metrics.py CATALOGUE and
    BentoML's), as they appear on /metrics."""
    from service.metrics import CATALOGUE, PREFIX

    names = dict(BENTOML_SERIES)
    for name, (kind, _, labels) in CATALOGUE.items():
        full, base = f"{PREFIX}_{name}", {"task", *labels}
        if kind == "histogram":
            names.update({f"{full}_bucket": base | {"le"}, f"{full}_sum": base, f"{full}_count": base})
        else:
            names[full] = base
    return names


def selectors(expr: str) -> list:
    import promql_parser

    found = []
    promql_parser.walk(promql_parser.parse(expr),
                       lambda node: found.append(node) if isinstance(node, promql_parser.VectorSelector) else None)
    return found


def selector_name(selector) -> str:
    if selector.name:
        return selector.name
    named = [m.value for m in selector.matchers.matchers if m.name == "__name__"]
    assert named, f"a selector without a metric name: {selector}"
    return named[0]


def name_problems(expr: str, allowed: dict[str, set[str] | None], where: str) -> list[str]:
    """Metric names outside `allowed`, and label matchers on labels the metric does not have
    (None: any label; the Prometheus target labels are always there)."""
    problems = []
    for sel in selectors(expr):
        name = selector_name(sel)
        if name not in allowed:
            problems.append(f"{where}: {name} is not a metric the service exports")
            continue
        labels = allowed[name]
        for m in sel.matchers.matchers:
            if labels is not None and m.name != "__name__" and m.name not in labels | TARGET_LABELS:
                problems.append(f"{where}: {name} has no label {m.name}")
    return problems


def rules() -> list[tuple[str, dict]]:
    return [(g["name"], r) for g in prometheus_rule_groups() for r in g["rules"]]


def test_rules_name_only_exported_metrics_or_rules_recorded_before_them():
    allowed: dict[str, set[str] | None] = dict(series_labels())
    problems, alerts = [], 0
    for group in prometheus_rule_groups():
        for rule in group["rules"]:
            where = rule.get("record") or rule.get("alert")
            problems += name_problems(rule["expr"], allowed, where)
            if "record" in rule:
                assert ":" in rule["record"], "recorded names follow level:metric:operations"
                assert rule["record"] not in allowed, f"{rule['record']} recorded twice"
                allowed[rule["record"]] = None
            else:
                alerts += 1
    assert not problems, problems
    assert alerts >= 3


def test_each_alert_is_a_comparison_with_a_threshold_and_says_what_it_means():
    import promql_parser

    for _, rule in rules():
        if "alert" not in rule:
            continue
        node = promql_parser.parse(rule["expr"])
        assert isinstance(node, promql_parser.BinaryExpr) and str(node.op).strip() in (">", "<"), rule
        assert isinstance(node.rhs, promql_parser.NumberLiteral), rule
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert {"summary", "description"} <= set(rule["annotations"])


def rules_file(tmp_path: Path, *, annotations: bool = True) -> Path:
    groups = prometheus_rule_groups()
    if not annotations:  # promtool test rules compares them verbatim; check rules checks them
        for group in groups:
            for rule in group["rules"]:
                rule.pop("annotations", None)
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


def test_promtool_check_rules(tmp_path):
    result = subprocess.run([promtool(), "check", "rules", str(rules_file(tmp_path))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


# Synthetic series for `promtool test rules`, one minute apart for 40 minutes, labelled as the
# Prometheus Operator labels a scraped pod (with honorLabels, BentoML's `endpoint` stays).
TARGET = 'namespace="textcls", job="textcls", pod="textcls-0"'
ALERT_LABELS = {"namespace": "textcls", "job": "textcls", "task": "topic"}
ALERTS = {"TextclsHighLatencyP99": "warning", "TextclsHighErrorRate": "critical",
          "TextclsShedLoad": "warning"}


def answers(code: int, per_minute: int, route: str = "/topic") -> dict:
    return {"series": f'bentoml_service_request_total{{{TARGET}, endpoint="{route}", '
                      f'http_response_code="{code}", service_name="TextClassifier"}}',
            "values": f"0+{per_minute}x40"}


def failures(error_type: str, per_minute: int, task: str = "topic") -> dict:
    return {"series": f'textcls_request_errors_total{{{TARGET}, task="{task}", type="{error_type}"}}',
            "values": f"0+{per_minute}x40"}


def latencies(per_minute: int, seconds: float, task: str = "topic") -> list[dict]:
    """Every request taking `seconds`: the buckets below it stay flat."""
    bounds = ["0.25", "0.5", "1.0", "2.0", "5.0", "+Inf"]
    return [{"series": f'textcls_request_duration_seconds_bucket{{{TARGET}, task="{task}", le="{le}"}}',
             "values": f"0+{per_minute if float(le) >= seconds else 0}x40"} for le in bounds]


def healthy_traffic(task: str = "topic") -> list[dict]:
    return [answers(200, 600, f"/{task}"), answers(422, 120, f"/{task}"), answers(500, 0, f"/{task}"),
            failures("invalid_input", 120, task), failures("internal", 0, task),
            failures("overloaded", 0, task), *latencies(600, 0.2, task)]


def quiet(at: str, *names: str) -> list[dict]:
    return [{"eval_time": at, "alertname": name, "exp_alerts": []} for name in names or ALERTS]


def firing(at: str, name: str) -> dict:
    return {"eval_time": at, "alertname": name,
            "exp_alerts": [{"exp_labels": {"severity": ALERTS[name], **ALERT_LABELS}}]}


PROMTOOL_CASES = {
    # 600 answers a minute, 17% of them 422 (client errors page no one), p99 0.25 s
    "healthy": {
        "input_series": healthy_traffic() + healthy_traffic("sentiment"),
        "alert_rule_test": quiet("20m") + quiet("40m"),
        "promql_expr_test": [
            {"expr": "namespace_job_task:textcls_server_errors:ratio_rate5m", "eval_time": "20m",
             "exp_samples": [{"labels": f"namespace_job_task:textcls_server_errors:ratio_rate5m{{{k}}}",
                              "value": 0} for k in ('job="textcls", namespace="textcls", task="sentiment"',
                                                    'job="textcls", namespace="textcls", task="topic"')]},
            {"expr": 'namespace_job_task:textcls_shed_requests:ratio_rate5m{task="topic"}',
             "eval_time": "20m",
             "exp_samples": [{"labels": 'namespace_job_task:textcls_shed_requests:ratio_rate5m'
                              '{job="textcls", namespace="textcls", task="topic"}', "value": 0}]},
        ],
    },
    # every request between 1 and 2 s: p99 about 2 s; pending first, firing after 10 minutes
    "slow": {
        "input_series": [answers(200, 600), *latencies(600, 1.5)],
        "alert_rule_test": [*quiet("8m", "TextclsHighLatencyP99"), firing("20m", "TextclsHighLatencyP99"),
                            *quiet("20m", "TextclsHighErrorRate", "TextclsShedLoad")],
    },
    # 2% of answers 500
    "failing": {
        "input_series": [answers(200, 600), answers(500, 12), failures("internal", 12),
                         *latencies(600, 0.2)],
        "alert_rule_test": [*quiet("4m", "TextclsHighErrorRate"), firing("10m", "TextclsHighErrorRate"),
                            *quiet("20m", "TextclsHighLatencyP99", "TextclsShedLoad")],
    },
    # 2% of answers 504, BentoML's timeout, which the service's own counters never see
    "timing out": {
        "input_series": [answers(200, 600), answers(504, 12), *latencies(600, 0.2)],
        "alert_rule_test": [firing("10m", "TextclsHighErrorRate")],
    },
    # 0.5% of answers 500: under the 1% bound
    "a few errors": {
        "input_series": [answers(200, 600), answers(500, 3), failures("internal", 3),
                         *latencies(600, 0.2)],
        "alert_rule_test": quiet("20m") + quiet("40m"),
    },
    # 9% of answers 503 `overloaded`: shed load, not a server error
    "shedding": {
        "input_series": [answers(200, 600), answers(503, 60), failures("overloaded", 60),
                         *latencies(600, 0.2)],
        "alert_rule_test": [*quiet("8m", "TextclsShedLoad"), firing("20m", "TextclsShedLoad"),
                            *quiet("20m", "TextclsHighErrorRate", "TextclsHighLatencyP99")],
    },
    # no traffic at all: no alert, and no 0/0 ratios recorded
    "idle": {
        "input_series": [answers(200, 0), answers(500, 0), failures("overloaded", 0),
                         *latencies(0, 0.2)],
        "alert_rule_test": quiet("20m"),
        "promql_expr_test": [
            {"expr": name, "eval_time": "20m", "exp_samples": []}
            for name in ("namespace_job_task:textcls_server_errors:ratio_rate5m",
                         "namespace_job_task:textcls_shed_requests:ratio_rate5m")],
    },
}


def test_promtool_test_rules_each_alert_fires_on_its_series_and_stays_quiet_when_healthy(tmp_path):
    declared = {r["alert"] for _, r in rules() if "alert" in r}
    assert declared == set(ALERTS), "every alert needs its cases below"
    fired = {t["alertname"] for c in PROMTOOL_CASES.values() for t in c["alert_rule_test"] if t["exp_alerts"]}
    silent = {t["alertname"] for t in PROMTOOL_CASES["healthy"]["alert_rule_test"] if not t["exp_alerts"]}
    assert fired == silent == declared

    rules_path = rules_file(tmp_path, annotations=False)
    tests = []
    for name, case in PROMTOOL_CASES.items():
        tests.append({"name": name, "interval": "1m", **copy.deepcopy(case)})
    spec = {"rule_files": [rules_path.name], "evaluation_interval": "1m", "tests": tests}
    test_file = tmp_path / "rules_test.yml"
    test_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = subprocess.run([promtool(), "test", "rules", str(test_file)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "SUCCESS" in result.stdout + result.stderr, (
        result.stdout + result.stderr)


def dashboard() -> dict:
    return json.loads(DASHBOARD_JSON.read_text())


def grafana_to_promql(expr: str) -> str:
    """A Grafana query as Prometheus would get it: range variables become 5m and the template
    variables (only ever used inside label matchers) a match-all regex."""
    expr = re.sub(r"\$\{?__(?:rate_interval|interval|range)\}?", "5m", expr)
    return re.sub(r"\$\{\w+(?::\w+)?\}|\$\w+", ".*", expr)


def dashboard_queries() -> list[tuple[str, str]]:
    queries = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            queries.append((panel["title"], target["expr"]))
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
            assert match, f"variable {var['name']}: {query}"
            selector, label = match.groups()
            queries.append((f"variable {var['name']}", selector))
            assert label in TARGET_LABELS | {"task"}, (var["name"], label)
    return queries


def test_every_dashboard_query_parses_and_names_only_exported_metrics():
    problems = []
    for where, expr in dashboard_queries():
        try:
            problems += name_problems(grafana_to_promql(expr), series_labels(), where)
        except Exception as exc:  # a parse error: say which panel
            problems.append(f"{where}: {expr!r} does not parse: {exc}")
    assert not problems, problems


def test_the_dashboard_shows_what_the_issue_asks_for():
    text = "\n".join(expr for _, expr in dashboard_queries())
    board = dashboard()
    for quantile in ("0.5", "0.95", "0.99"):  # p50/p95/p99 latency per task
        assert re.search(rf"histogram_quantile\({quantile}, sum by \(task, le\) \(rate\("
                         r"textcls_request_duration_seconds_bucket", text), quantile
    for needed in ("textcls_request_duration_seconds_count",  # request rate
                   "textcls_queue_duration_seconds_bucket",   # queue time
                   "textcls_batch_size_",                     # batch size
                   "textcls_batch_tokens_",                   # tokens per batch
                   "by (task, type) (rate(textcls_request_errors_total"):  # errors by type
        assert needed in text, needed
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel.get("description"), panel["title"]
    assert board["uid"] and board["title"]


def test_the_dashboard_configmap_is_the_json_for_grafanas_sidecar():
    for target in (DASHBOARDS, *OVERLAYS.values()):
        (cm,) = [d for d in objects(target, "ConfigMap") if d["metadata"]["name"] == "textcls-dashboard"]
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(cm["data"]["textcls.json"]) == dashboard()


# --- images ----------------------------------------------------------------------------------

def load_gpu_bentofile_module():
    spec = importlib.util.spec_from_file_location("gpu_bentofile", K8S / "gpu_bentofile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def locked_packages(path: Path) -> dict[str, str]:
    return dict(re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)\s*(?:\\|;|$)", path.read_text(),
                           re.MULTILINE))


def test_the_gpu_bentofile_is_the_cpu_one_with_onnxruntime_gpu_and_a_cuda_base():
    gpu_bentofile = load_gpu_bentofile_module()
    cpu = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    gpu = gpu_bentofile.gpu_bentofile(cpu)
    assert gpu["name"] == f"{cpu['name']}-gpu"
    # bentofile.yaml installs the lock; the GPU Bento its twin, onnxruntime-gpu at the same version
    assert cpu["python"]["requirements_txt"] == "requirements/serving.lock"
    assert gpu["python"] == {**cpu["python"], "requirements_txt": "requirements/serving-gpu.lock"}
    cpu_lock = locked_packages(ROOT / cpu["python"]["requirements_txt"])
    gpu_lock = locked_packages(ROOT / gpu["python"]["requirements_txt"])
    assert "onnxruntime-gpu" not in cpu_lock and "onnxruntime" not in gpu_lock
    assert gpu_lock.pop("onnxruntime-gpu") == cpu_lock.pop("onnxruntime")
    assert gpu_lock == cpu_lock  # everything else pinned alike
    assert gpu["docker"]["base_image"].startswith("nvidia/cuda:13.")
    assert "cudnn-runtime" in gpu["docker"]["base_image"]
    same = {k: v for k, v in cpu.items() if k not in ("name", "python", "docker", "envs")}
    assert {k: gpu[k] for k in same} == same
    # a bentofile.yaml that lists packages instead: onnxruntime is swapped in place
    listed = {**cpu, "python": {"packages": ["numpy==2.0", "onnxruntime==1.31.1", "typer==0.29.2"]}}
    assert gpu_bentofile.gpu_bentofile(listed)["python"]["packages"] == [
        "numpy==2.0", "onnxruntime-gpu==1.31.1", "typer==0.29.2"]
    with pytest.raises(gpu_bentofile.GpuBentofileError):
        gpu_bentofile.gpu_bentofile({**cpu, "python": {"packages": ["numpy==2.0"]}})


def test_the_gpu_bentofile_refuses_a_gpu_lock_that_does_not_match(tmp_path):
    gpu_bentofile = load_gpu_bentofile_module()
    (tmp_path / "bentofile.yaml").write_text("python:\n  requirements_txt: r/serving.lock\n")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "serving.lock").write_text("numpy==2.4.6 \\\n    --hash=sha256:00\n"
                                                 "onnxruntime==1.31.1 \\\n    --hash=sha256:11\n")
    out = tmp_path / "gpu.yaml"
    assert gpu_bentofile.main([str(tmp_path / "bentofile.yaml"), str(out)]) == 1  # no GPU lock
    (tmp_path / "r" / "serving-gpu.lock").write_text("onnxruntime-gpu==1.30.0 \\\n    --hash=sha256:22\n")
    assert gpu_bentofile.main([str(tmp_path / "bentofile.yaml"), str(out)]) == 1  # another version
    (tmp_path / "r" / "serving-gpu.lock").write_text("onnxruntime-gpu==1.31.1 \\\n    --hash=sha256:22\n")
    assert gpu_bentofile.main([str(tmp_path / "bentofile.yaml"), str(out)]) == 0
    assert yaml.safe_load(out.read_text())["python"]["requirements_txt"] == "r/serving-gpu.lock"


def test_build_images_script_is_valid_bash_and_documents_itself():
    script = K8S / "build-images.sh"
    assert os.access(script, os.X_OK)
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    usage = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert usage.returncode == 0 and "bentoml containerize" in usage.stdout


def test_docs_name_the_oldest_version_and_every_alert():
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    assert f"Kubernetes {OLDEST_KUBERNETES}" in deploy
    for name in ALERTS:
        assert name in deploy
    readme = (ROOT / "README.md").read_text()
    assert readme.index("## Deploy to Kubernetes") < readme.index("## Tests")


# --- 4. a served Bento, run as the Deployment runs it ----------------------------------------

def bentoml(*args: str, cwd: Path = ROOT) -> str:
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "True"}
    result = subprocess.run([str(BENTOML), *args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def container_environment(target: str, container: dict, mounts: dict[str, Path]) -> dict[str, str]:
    """What the kubelet gives the container: the ConfigMap, then `env`, with resourceFieldRef
    resolved and paths under an emptyDir mount moved to the directory that stands for it."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(one(target, "ConfigMap", source["configMapRef"]["name"])["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = moved(item["value"], mounts)
        else:
            ref = item["valueFrom"]["resourceFieldRef"]
            kind, resource = ref["resource"].split(".")
            quantity = cpu_cores(container["resources"][kind][resource])
            env[item["name"]] = str(int(-(-quantity // float(ref.get("divisor", 1)))))
    return env


def read_only(*tops: Path, writable: bool = False) -> None:
    for top in tops:
        for path in [top, *top.rglob("*")]:
            if not path.is_symlink():
                mode = path.stat().st_mode
                path.chmod(mode | 0o700 if writable else mode & ~0o222)


@pytest.fixture(scope="module")
def image(tiny_bundles, tmp_path_factory):
    """What the CPU image holds, as far as a directory can: the Bento built from bentofile.yaml
    and exported as `bentoml containerize` packs it (code under src/, models under models/),
    unpacked and made read-only ($BENTO_PATH), and a read-only home directory."""
    root = tmp_path_factory.mktemp("image")
    tag = re.search(r"__tag__:(\S+)", bentoml("build", "-o", "tag", ".")).group(1)
    bentoml("export", tag, str(root / "textcls.bento"))
    bento, home = root / "bento", root / "home"
    with tarfile.open(root / "textcls.bento") as tar:
        tar.extractall(bento, filter="data")
    home.mkdir()
    read_only(bento, home)
    try:
        yield {"bento": bento, "home": home}
    finally:
        read_only(bento, home, writable=True)


def container_run(target: str, obj: dict, container: dict, image: dict, root: Path,
                  extra: dict[str, Path] | None = None) -> tuple[dict[str, str], dict[str, Path]]:
    """The container's environment, and a directory standing for each of its volume mounts:
    emptyDirs (and the `extra` mounts, e.g. a PersistentVolumeClaim) are the only writable places."""
    volumes = {v["name"]: v for v in pod_spec(obj)["volumes"]}
    mounts = {}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            mounts[mount["mountPath"]] = root / mount["name"]
            mounts[mount["mountPath"]].mkdir(exist_ok=True)
        else:
            assert extra and mount["mountPath"] in extra, f"no stand-in for {mount}"
            mounts[mount["mountPath"]] = extra[mount["mountPath"]]
    env = container_environment(target, container, mounts)
    env.update(PATH=f"{BENTOML.parent}:/usr/bin:/bin", HOME=str(image["home"]), LANG="C.UTF-8",
               TMPDIR=str(mounts["/tmp"]), BENTOML_CONTAINERIZED="true",
               BENTO_PATH=str(image["bento"]))  # the image's ENV
    return env, mounts


def moved(arg: str, mounts: dict[str, Path]) -> str:
    for mount, directory in mounts.items():
        if arg == mount or arg.startswith(mount + "/"):
            return str(directory) + arg[len(mount):]
    return arg


@pytest.fixture(scope="module")
def pod(image, tmp_path_factory):
    """The CPU overlay's serving container as near as a process gets to it: the image's Bento,
    started as the image's entrypoint starts it (`bentoml serve ARGS $BENTO_PATH`) with the
    container's args, in the container's environment, writable only where it mounts an emptyDir."""
    deployment, _, container = server(OVERLAYS["cpu"])
    root = tmp_path_factory.mktemp("pod")
    env, mounts = container_run(OVERLAYS["cpu"], deployment, container, image, root)
    args = list(container["args"])
    port = free_port()
    args[args.index("--port") + 1] = str(port)
    bento = image["bento"]
    log = root / "serve.log"
    url = f"http://127.0.0.1:{port}"
    with serving([str(BENTOML), *args, str(bento)], f"{url}/readyz", log, cwd=bento, env=env,
                 what="the served Bento") as proc:
        yield {"url": url, "proc": proc, "log": log, "env": env, "mounts": mounts,
               "deployment": deployment, "container": container}


def test_the_batch_job_and_its_merge_run_in_the_image(image, tmp_path):
    """Every index of the Indexed Job, then the merge Job, run as their containers run: the
    image's Bento read-only, the container's command in its workingDir, JOB_COMPLETION_INDEX as
    Kubernetes sets it, and the volume at /data standing in for the PersistentVolumeClaim."""
    score, merge = score_and_merge()
    data = tmp_path / "volume"
    (scorer,) = containers(score)
    source = scorer["command"][4]
    rows = 2500  # three of the four shards get a chunk (1000 rows) to score
    Path(moved(source, {"/data": data})).parent.mkdir(parents=True)
    Path(moved(source, {"/data": data})).write_text(
        "id,text\n" + "".join(f"{i},text number {i} about the match and the market\n" for i in range(rows)))
    Path(moved("/data/out", {"/data": data})).mkdir()

    def run(job: dict, container: dict, index: int | None) -> None:
        env, mounts = container_run(JOB, job, container, image, tmp_path / container["name"],
                                    extra={"/data": data})
        if index is not None:
            env["JOB_COMPLETION_INDEX"] = str(index)
        command = [moved(arg, mounts) for arg in container["command"]]
        assert command[0] == "python"
        command[0] = sys.executable  # the image's python, with the Bento's requirements
        cwd = Path(moved(container["workingDir"], {f"{image_bento_path()}": image["bento"]}))
        result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, (container["name"], index, result.stdout[-3000:],
                                        result.stderr[-3000:])

    (tmp_path / "score").mkdir()
    for index in range(score["spec"]["completions"]):
        run(score, scorer, index)
    (merger,) = containers(merge)
    (tmp_path / "merge").mkdir()
    run(merge, merger, None)
    output = Path(moved(scorer["command"][scorer["command"].index("-o") + 1], {"/data": data}))
    lines = output.read_text().splitlines()
    assert len(lines) == rows + 1
    assert [line.split(",")[0] for line in lines[1:]] == [str(i) for i in range(rows)]


def image_bento_path() -> str:
    from service.internals import bento_image_layout

    return bento_image_layout()[0]


@pytest.fixture(scope="module")
def exposition(pod) -> str:
    """/metrics after predictions on both tasks and a few invalid requests."""
    url = pod["url"]

    def send(i: int) -> int:
        task = ("sentiment", "topic")[i % 2]
        return httpx.post(f"{url}/{task}", json={"texts": [f"text {i} " + "word " * (i % 5)]},
                          timeout=30).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(send, range(32))) == {200}
    for task in ("sentiment", "topic"):
        assert httpx.post(f"{url}/{task}", json={"texts": [""]}, timeout=30).status_code == 422
    return httpx.get(f"{url}/metrics", timeout=30).text


def test_the_served_bento_takes_the_pods_settings(pod):
    text = pod["log"].read_text()
    assert "CPUExecutionProvider" in text
    assert pod["env"]["TEXTCLS_THREADS"] == "2" and pod["env"]["TEXTCLS_DEVICE"] == "cpu"
    # BentoML keeps its Prometheus multiprocess files in its home: the emptyDir
    assert (pod["mounts"]["/var/lib/bentoml"] / "prometheus_multiproc_dir").is_dir()


def test_every_probe_path_answers_on_the_served_bento(pod):
    paths = {pod["container"][k]["httpGet"]["path"]
             for k in ("startupProbe", "livenessProbe", "readinessProbe")}
    for path in paths:
        assert httpx.get(pod["url"] + path, timeout=10).status_code == 200, path


def test_promtool_check_metrics_accepts_the_services_metrics(exposition):
    path = one(OVERLAYS["cpu"], "ServiceMonitor")["spec"]["endpoints"][0]["path"]
    assert path == "/metrics"
    result = subprocess.run([promtool(), "check", "metrics"], input=exposition,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr)


def live_series(exposition: str) -> dict[str, set[str]]:
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return found


def metrics_problems(exposition: str) -> list[str]:
    """What the rules and the dashboard read that a live /metrics lacks: every metric the service
    declares with its labels, and every name and label matcher of every expression."""
    live = live_series(exposition)
    problems = []
    for name, labels in series_labels().items():
        if name not in live:
            problems.append(f"{name} is not on /metrics")
        elif not labels <= live[name]:
            problems.append(f"{name}: labels {labels - live[name]} not on /metrics")
    recorded = {r["record"]: None for _, r in rules() if "record" in r}
    exprs = [(r.get("record") or r["alert"], r["expr"]) for _, r in rules()]
    exprs += [(where, grafana_to_promql(e)) for where, e in dashboard_queries()]
    return problems + [p for where, expr in exprs for p in name_problems(expr, {**live, **recorded}, where)]


def test_every_metric_and_label_the_rules_and_dashboard_read_is_on_metrics(exposition):
    assert not metrics_problems(exposition)


def test_only_the_endpoint_label_collides_with_target_labels_and_honor_labels_keeps_it(exposition):
    live_labels = set().union(*live_series(exposition).values())
    assert live_labels & TARGET_LABELS == {"endpoint"}
    (endpoint,) = one(OVERLAYS["cpu"], "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["honorLabels"] is True


def test_the_gpu_bento_builds_offline_with_onnxruntime_gpu_on_a_cuda_base(tiny_bundles, tmp_path):
    gpu_bentofile = load_gpu_bentofile_module()
    spec = tmp_path / "bentofile.gpu.yaml"
    assert gpu_bentofile.main([str(ROOT / "bentofile.yaml"), str(spec)]) == 0
    tag = re.search(r"__tag__:(\S+)", bentoml("build", "-f", str(spec), "-o", "tag", ".")).group(1)
    name, version = tag.split(":")
    assert name == "textcls-gpu"
    bento = Path(os.environ["BENTOML_HOME"]) / "bentos" / name / version
    requirements = (bento / "env" / "python" / "requirements.txt").read_text().split()
    assert any(r.startswith("onnxruntime-gpu==") for r in requirements)
    assert not any(r.startswith("onnxruntime==") for r in requirements)
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    assert re.search(r"^FROM nvidia/cuda:13\.\S+-cudnn-runtime-ubuntu24\.04", dockerfile, re.MULTILINE)
    build, image = dockerfile.split("\nFROM base-container\n")
    # the build stage gets pip from Debian, uv with it, and Python 3.11 from uv; the image none of it
    assert "apt-get install -q -y --no-install-recommends python3-pip" in build
    assert 'install -q --no-cache-dir --root-user-action=ignore "uv==$UV_VERSION"' in build
    assert "UV_PYTHON_INSTALL_DIR=/app/python uv venv -q --python python3.11" in build
    # the GPU image packs each model's GPU variant (fp16) and explain: service.pack on cuda
    assert "ENV TEXTCLS_DEVICE=cuda" in build and "python -m service.pack" in build
    assert "apt-get" not in image and "COPY --from=build /app /app" in image
    assert re.search(r"^USER bentoml$", image, re.MULTILINE)  # the image runs as uid 1034


def test_sigterm_after_the_prestop_pause_stops_the_server_within_the_grace_period(pod):
    # last: it stops the module's server
    spec = pod_spec(pod["deployment"])
    pause = int(pod["container"]["lifecycle"]["preStop"]["exec"]["command"][1])
    budget = spec["terminationGracePeriodSeconds"] - pause
    proc = pod["proc"]
    started = time.monotonic()
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=budget)
    took = time.monotonic() - started
    assert took < budget / 2, f"BentoML took {took:.1f} s to stop; the pod allows {budget} s"
