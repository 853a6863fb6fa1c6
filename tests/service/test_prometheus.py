"""A real Prometheus server scrapes a real `bentoml serve` on loopback.

The service runs on the tiny bundles; Prometheus (Debian's `prometheus` package, which `.ci/run`
installs) scrapes its /metrics every 2 s and evaluates the recording and alerting rules of
`k8s/base/prometheus-rule.yaml`, the very rules the Kubernetes deployment ships. After some
traffic the test asks Prometheus' HTTP API whether the latency histograms and batch-size metrics
arrived with their task labels, and whether every rule's query evaluates to numbers. Skipped only
where the Prometheus binary is absent, and says so.
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import yaml

from processes import free_port, serve_command, serve_env, serving

PROMETHEUS = shutil.which("prometheus")
TASKS = ("sentiment", "topic")
REQUESTS_PER_TASK = 24

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="no `prometheus` binary: install Debian's package (`apt-get install prometheus`), as .ci/run does",
)


@pytest.fixture(scope="module")
def service(tiny_bundles, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("serve-prom") / "serve.log"
    with serving(serve_command(port), f"http://127.0.0.1:{port}/readyz", log, env=serve_env(),
                 what="bentoml serve"):
        yield port


@pytest.fixture(scope="module")
def rule_groups() -> list[dict]:
    from k8s_manifests import prometheus_rule_groups

    groups = prometheus_rule_groups()
    assert groups, "the PrometheusRule has no rule groups"
    return groups


@pytest.fixture(scope="module")
def prometheus(service, rule_groups, tmp_path_factory):
    """Prometheus on a free loopback port, scraping the service and evaluating the deployment's
    rules every 2 s (the scrape timeout is the interval: 1 s was too short for /metrics on a busy
    2-core machine, and a missed scrape leaves rate() without samples)."""
    root = tmp_path_factory.mktemp("prometheus")
    (root / "rules.yml").write_text(yaml.safe_dump({"groups": rule_groups}, sort_keys=False))
    config = {
        "global": {"scrape_interval": "2s", "scrape_timeout": "2s", "evaluation_interval": "2s"},
        "rule_files": [str(root / "rules.yml")],
        "scrape_configs": [{
            "job_name": "textcls",
            "metrics_path": "/metrics",
            "static_configs": [{"targets": [f"127.0.0.1:{service}"]}],
        }],
    }
    (root / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    command = [PROMETHEUS, f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'data'}",
               f"--web.listen-address=127.0.0.1:{port}"]
    url = f"http://127.0.0.1:{port}"
    with serving(command, f"{url}/-/ready", root / "prometheus.log", cwd=root, timeout=60, what="prometheus"):
        yield url


def query(prom: str, expr: str) -> list[dict]:
    answer = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", (expr, answer)
    return answer["data"]["result"]


def wait_for(prom: str, expr: str, ok, timeout: float = 45) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        result = query(prom, expr)
        if ok(result):
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{expr} never met the condition; last answer {result}")
        time.sleep(1)


@pytest.fixture(scope="module")
def traffic(service, prometheus):
    """Predictions from a few concurrent clients on both tasks, plus one invalid request each."""
    url = f"http://127.0.0.1:{service}"

    def send(i: int) -> int:
        task = TASKS[i % 2]
        return httpx.post(f"{url}/{task}", json={"texts": [f"request {i} " + "word " * (i % 7)]},
                          timeout=30).status_code

    # One request per task first, scraped twice, so the series exist before the burst: rate()
    # only sees increases between samples, and a series born with its final value has none.
    assert [send(i) for i in range(len(TASKS))] == [200] * len(TASKS)
    wait_for(prometheus, 'min(count_over_time(textcls_request_duration_seconds_count{task=~"sentiment|topic"}[5m]))',
             lambda r: r and float(r[0]["value"][1]) >= 2)
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(send, range(REQUESTS_PER_TASK * len(TASKS))))
    assert codes == [200] * len(codes)
    for task in TASKS:
        assert httpx.post(f"{url}/{task}", json={"texts": [""]}, timeout=30).status_code == 422
    # every request above is in Prometheus once a scrape after them has landed
    wait_for(prometheus, 'sum(textcls_request_duration_seconds_count{task=~"sentiment|topic"})',
             lambda r: r and float(r[0]["value"][1]) >= (REQUESTS_PER_TASK + 1) * len(TASKS))
    wait_for(prometheus, 'textcls_request_errors_total{type="invalid_input"} >= 1',
             lambda r: {s["metric"]["task"] for s in r} >= set(TASKS))
    return prometheus


def test_prometheus_scrapes_the_service(traffic):
    up = query(traffic, "up")
    assert [float(s["value"][1]) for s in up] == [1.0]


@pytest.mark.parametrize("metric", ["textcls_request_duration_seconds", "textcls_inference_duration_seconds",
                                    "textcls_queue_duration_seconds", "textcls_batch_size", "textcls_batch_tokens"])
def test_histograms_arrive_with_their_task_labels(traffic, metric):
    buckets = query(traffic, f"{metric}_bucket")
    assert {s["metric"].get("task") for s in buckets} >= set(TASKS), metric
    assert all("le" in s["metric"] for s in buckets)
    counts = {s["metric"]["task"]: float(s["value"][1]) for s in query(traffic, f"{metric}_count")}
    assert all(counts[task] > 0 for task in TASKS), counts
    # a latency or size quantile computed by Prometheus itself is a number for each task
    p99 = query(traffic, f"histogram_quantile(0.99, sum by (le, task) (rate({metric}_bucket[5m])))")
    values = {s["metric"]["task"]: float(s["value"][1]) for s in p99}
    assert set(values) >= set(TASKS) and all(v == v and v >= 0 for v in values.values()), values  # not NaN


def test_every_request_is_counted_and_the_errors_by_type(traffic):
    counts = {s["metric"]["task"]: float(s["value"][1])
              for s in query(traffic, "textcls_request_duration_seconds_count")}
    for task in TASKS:
        assert counts[task] >= REQUESTS_PER_TASK
    errors = query(traffic, 'textcls_request_errors_total{type="invalid_input"}')
    assert {s["metric"]["task"] for s in errors if float(s["value"][1]) >= 1} >= set(TASKS)


def _numeric_part(expr: str) -> str:
    """An alert's condition without its threshold (`lhs > 0.5` -> `lhs`): the part that must be a
    number; the comparison itself answers nothing while the service is healthy."""
    import promql_parser

    node = promql_parser.parse(expr)
    while isinstance(node, promql_parser.BinaryExpr) and str(node.op).strip() in (">", "<", ">=", "<=", "==", "!="):
        node = node.lhs
    return str(node)


def test_every_rule_is_evaluated_without_error_and_its_query_gives_numbers(traffic, rule_groups):
    declared = [r for g in rule_groups for r in g["rules"]]
    deadline = time.monotonic() + 30
    while True:  # each rule evaluated at least once since the traffic
        rules = [r for g in httpx.get(f"{traffic}/api/v1/rules", timeout=10).json()["data"]["groups"]
                 for r in g["rules"]]
        if len(rules) == len(declared) and all(r.get("lastEvaluation", "").startswith("2") and
                                               not r["lastEvaluation"].startswith("0001") for r in rules):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"rules not all evaluated: {rules}")
        time.sleep(1)
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]

    recordings = [r for r in declared if "record" in r]
    alerts = [r for r in declared if "alert" in r]
    assert recordings and alerts, "the rules should hold recording rules and alerts"
    server_errors = _rules_on_server_errors(recordings)
    for rule in declared:
        expr = rule["record"] if "record" in rule else _numeric_part(rule["expr"])
        name = rule.get("record") or rule["alert"]
        if name in server_errors or _mentions(expr, server_errors):
            # a healthy service never answered a 5xx, so BentoML has no such series: nothing to
            # compute, which Prometheus answers with an empty vector (not an error)
            assert all(_is_number(s) for s in query(traffic, expr)), name
            continue
        series = wait_for(traffic, expr, bool, timeout=20)  # numbers, for the tasks with traffic
        assert all(_is_number(s) for s in series), (name, series)
        assert {s["metric"].get("task") for s in series} >= set(TASKS), (name, series)
    firing = [r["name"] for r in rules if r.get("state") == "firing"]
    assert not firing, f"alerts firing on a healthy service: {firing}"


def _is_number(sample: dict) -> bool:
    value = float(sample["value"][1])
    return value == value  # not NaN


def _mentions(expr: str, names: set[str]) -> bool:
    return any(name in expr for name in names)


def _rules_on_server_errors(recordings: list[dict]) -> set[str]:
    """Recording rules fed by 5xx answers, directly or through another such rule."""
    found: set[str] = set()
    while True:
        more = {r["record"] for r in recordings
                if r["record"] not in found and ('"5..' in r["expr"] or _mentions(r["expr"], found))}
        if not more:
            return found
        found |= more
