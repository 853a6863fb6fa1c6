"""Settings: defaults, TEXTCLS_* overrides, fail-fast start-up, and docs that list them all."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from service_fixtures import (  # noqa: F401  (anyio_backend is a fixture)
    TEST_BENTOML_CONFIG, FakeEngine, fake_settings, serving, anyio_backend,
)

from service.errors import ErrorType
from service.metrics import metric_names
from service.service import service_for
from service.settings import ServiceSettings, SettingsError, env_name, load_settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "service.md"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("TEXTCLS_"):
            monkeypatch.delenv(name)


def test_defaults_serve_the_store_models_with_every_core_this_process_may_use():
    s = load_settings()
    assert (s.sentiment_model, s.topic_model) == ("sentiment", "topic")
    assert s.threads == len(os.sched_getaffinity(0))
    assert s.device == "auto" and s.overlong == "truncate"
    assert s.max_batch_size >= 2 and s.max_latency_ms >= 1000  # see the field's description


def test_environment_variables_with_the_prefix_override_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("TEXTCLS_MAX_BATCH_SIZE", "16")
    monkeypatch.setenv("TEXTCLS_OVERLONG", "refuse")
    monkeypatch.setenv("TEXTCLS_TOPIC_MODEL", str(tmp_path))
    monkeypatch.setenv("TEXTCLS_SENTIMENT_MODEL", "sentiment:v2")
    s = load_settings()
    assert (s.max_batch_size, s.overlong) == (16, "refuse")
    assert s.topic_model == str(tmp_path) and s.sentiment_model == "sentiment:v2"


@pytest.mark.parametrize("name,value,phrase", [
    ("TEXTCLS_MAX_BATCH_SIZE", "0", "greater than or equal to 1"),
    ("TEXTCLS_DEVICE", "tpu", "'auto', 'cpu' or 'cuda'"),
    ("TEXTCLS_THREADS", "many", "valid integer"),
    ("TEXTCLS_TOPIC_MODEL", "./no/such/bundle", "no bundle directory"),
    ("TEXTCLS_SENTIMENT_MODEL", "Not A Tag", "neither a model store tag"),
    ("TEXTCLS_LONG_TEXTS", "split", "'split' is not a long-text rule: give truncate, head_tail, chunk"),
    ("TEXTCLS_MAX_WINDOWS", "0", "greater than or equal to 1"),
    ("TEXTCLS_MAX_WINDOWS", "four", "valid integer"),
])
def test_a_bad_value_fails_with_the_variable_named(monkeypatch, name, value, phrase):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert f"{name}={value}" in str(err.value) and phrase in str(err.value)


def test_the_long_text_settings_are_empty_for_the_bundles_rule_or_override_it(monkeypatch):
    s = load_settings()
    assert (s.long_texts, s.max_windows) == ("", None)
    monkeypatch.setenv("TEXTCLS_LONG_TEXTS", "")  # as the Kubernetes ConfigMap sets them
    monkeypatch.setenv("TEXTCLS_MAX_WINDOWS", "")
    s = load_settings()
    assert (s.long_texts, s.max_windows) == ("", None)
    monkeypatch.setenv("TEXTCLS_LONG_TEXTS", " head_tail ")
    monkeypatch.setenv("TEXTCLS_MAX_WINDOWS", "8")
    s = load_settings()
    assert (s.long_texts, s.max_windows) == ("head_tail", 8)


@pytest.mark.parametrize(("name", "value", "message"), [
    ("TEXTCLS_MAX_LATENCY_MS", "0", "TEXTCLS_MAX_LATENCY_MS=0"),
    ("TEXTCLS_LONG_TEXTS", "middle", "TEXTCLS_LONG_TEXTS=middle: 'middle' is not a long-text rule"),
])
def test_the_service_refuses_to_start_on_bad_settings(name, value, message):
    env = {**os.environ, name: value}
    result = subprocess.run([sys.executable, "-c", "import service.service"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert message in result.stderr


@pytest.mark.anyio
async def test_a_bundle_of_the_wrong_task_stops_start_up(tmp_path):
    def swapped(task, ref, settings):
        return FakeEngine("topic")  # served at /sentiment too: must not start

    svc = service_for(fake_settings(tmp_path), engine_factory=swapped,
                        bentoml_config=TEST_BENTOML_CONFIG)
    with pytest.raises(RuntimeError, match="is a 'topic' bundle, not a 'sentiment' one"):
        async with serving(svc):
            pass


def test_docs_list_every_setting_metric_and_error_type():
    docs = DOCS.read_text()
    for field, info in ServiceSettings.model_fields.items():
        assert f"`{env_name(field)}`" in docs, f"{env_name(field)} missing from {DOCS}"
        assert info.description, f"{field} has no description"
    for name in metric_names():
        assert f"`{name}`" in docs, f"{name} missing from {DOCS}"
    for error_type in ErrorType:
        assert f"`{error_type.value}`" in docs, f"{error_type.value} missing from {DOCS}"
