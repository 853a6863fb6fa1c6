"""Faults at start: `bentoml serve` with a broken model or setting stops with one clear message
and a non-zero exit, before any worker starts, so /readyz never says ready with a broken model.

Each case copies a tiny bundle (tests/conftest.py), breaks it one way, and serves it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from processes import ROOT, free_port, serve_command, serve_env
from engine.bundle import Bundle

pytestmark = pytest.mark.reliability


def served_file(bundle: Path) -> str:
    return Bundle.load(bundle).variants[Bundle.load(bundle).cpu_variant]["file"]


def truncate_model(bundle: Path) -> None:
    file = bundle / served_file(bundle)
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 3])


def change_tokenizer(bundle: Path) -> None:
    tokenizer = bundle / "tokenizer.json"
    data = json.loads(tokenizer.read_text())
    data["truncation"] = None  # still a valid tokenizer: only the hash can tell
    tokenizer.write_text(json.dumps(data))


def delete_model(bundle: Path) -> None:
    (bundle / served_file(bundle)).unlink()


def corrupt_manifest(bundle: Path) -> None:
    (bundle / "manifest.json").write_text('{"task": "sentiment", ')


def fail_every_variant(bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["cpu_variant"] = None
    (bundle / "manifest.json").write_text(json.dumps(manifest))


BREAKS = {
    "truncated model file": (truncate_model, ["does not match its manifest", "re-export"]),
    "tokenizer changed after export": (change_tokenizer, ["tokenizer.json does not match its manifest"]),
    "model file deleted": (delete_model, ["is missing its file model"]),
    "manifest not JSON": (corrupt_manifest, ["manifest.json is not valid JSON"]),
    "no servable variant": (fail_every_variant, ["no CPU variant that passed"]),
}


def serve_until_exit(env: dict[str, str], timeout: float = 90) -> tuple[subprocess.CompletedProcess, bool]:
    """`bentoml serve` to its exit; also whether /readyz ever answered 200 meanwhile."""
    port = free_port()
    proc = subprocess.Popen(serve_command(port), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    ready = False
    try:
        while proc.poll() is None:
            try:
                ready = ready or httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                pass
            try:
                proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                timeout -= 0.5 + 1
                if timeout <= 0:
                    proc.kill()
                    pytest.fail("bentoml serve neither served nor exited")
        output = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, output), ready


def assert_clear_failure(result: subprocess.CompletedProcess, ready: bool, *needles: str) -> None:
    assert result.returncode != 0, result.stdout[-3000:]
    assert not ready, "/readyz said ready with a broken model"
    text = " ".join(result.stdout.split())
    for needle in needles:
        assert needle in text, result.stdout[-3000:]
    assert "Traceback" not in result.stdout, result.stdout[-3000:]


@pytest.mark.parametrize("case", list(BREAKS))
def test_a_broken_bundle_stops_start_up_with_one_message(tiny_bundles, tmp_path, case):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundles["sentiment"], bundle)
    breaker, needles = BREAKS[case]
    breaker(bundle)
    result, ready = serve_until_exit(serve_env(TEXTCLS_SENTIMENT_MODEL=str(bundle)))
    assert_clear_failure(result, ready, "cannot serve", f"TEXTCLS_SENTIMENT_MODEL={bundle}", *needles)


def test_a_bundle_of_the_other_task_stops_start_up(tiny_bundles):
    result, ready = serve_until_exit(serve_env(TEXTCLS_SENTIMENT_MODEL=str(tiny_bundles["topic"])))
    assert_clear_failure(result, ready, "is a 'topic' bundle, not a 'sentiment' one")


def test_a_model_missing_from_the_store_stops_start_up(tiny_bundles):
    result, ready = serve_until_exit(serve_env(TEXTCLS_TOPIC_MODEL="topic:doesnotexist"))
    assert_clear_failure(result, ready, "topic:doesnotexist")


@pytest.mark.parametrize("name, value, phrase", [
    ("TEXTCLS_SENTIMENT_MODEL", "/no/such/bundle", "no bundle directory at /no/such/bundle"),
    ("TEXTCLS_MAX_BATCH_SIZE", "0", "greater than or equal to 1"),
    ("TEXTCLS_SHUTDOWN_GRACE_SECONDS", "-1", "greater than or equal to 0"),
])
def test_an_invalid_setting_stops_start_up(tiny_bundles, name, value, phrase):
    result, ready = serve_until_exit(serve_env(**{name: value}))
    assert_clear_failure(result, ready, f"{name}={value}", phrase)


def test_an_intact_bundle_copy_serves(tiny_bundles, tmp_path):
    """The control: the same copy, unbroken, passes the check (so the cases above fail for
    their fault, not for being copies)."""
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundles["sentiment"], bundle)
    assert Bundle.load(bundle).verify([served_file(bundle), "tokenizer.json"])
