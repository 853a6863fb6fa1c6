"""The Kubernetes manifests of k8s/, rendered offline, as the tests see them.

- ``render(path)``: ``kubectl kustomize <path>`` parsed with PyYAML, one dict per object. Needs
  kubectl with Kustomize v5 built in (kubectl 1.27 or newer); without it, it raises
  ``ToolMissing`` naming the tool, so a test fails rather than skips.
- ``prometheus_rule_groups()``: the ``spec.groups`` of the PrometheusRule in
  k8s/base/prometheus-rule.yaml, the body of a Prometheus rules file once wrapped as
  ``{"groups": ...}``. Read from the file itself (Kustomize never changes ``spec``, which
  tests/test_k8s.py checks), so it needs no kubectl.

Imported by tests/test_k8s.py and the Prometheus integration test.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
RULES_FILE = K8S / "base" / "prometheus-rule.yaml"
MIN_KUSTOMIZE_MAJOR = 5


class ToolMissing(RuntimeError):
    """A command-line tool the manifest tests need is not installed (or too old)."""


def _resolve(path: str | Path) -> Path:
    path = Path(path)
    return path if path.is_absolute() else ROOT / path


@functools.cache
def kubectl() -> str:
    """The kubectl binary, checked to carry Kustomize v5 or newer."""
    binary = shutil.which("kubectl")
    if binary is None:
        raise ToolMissing(
            "kubectl is not installed: the manifest tests render k8s/ with `kubectl kustomize` "
            "(kubectl 1.27 or newer; Debian's kubernetes-client 1.20 is too old). Install the "
            "`kubectl` package from pkgs.k8s.io or the Google Cloud SDK apt repository."
        )
    out = subprocess.run([binary, "version", "--client", "-o", "json"], capture_output=True,
                         text=True, timeout=60)
    version = json.loads(out.stdout or "{}").get("kustomizeVersion", "")
    match = re.match(r"v?(\d+)\.", version)
    if not match or int(match.group(1)) < MIN_KUSTOMIZE_MAJOR:
        raise ToolMissing(
            f"{binary} has Kustomize {version or 'of unknown version'} built in; the manifests "
            f"need Kustomize v{MIN_KUSTOMIZE_MAJOR} (kubectl 1.27 or newer)"
        )
    return binary


@functools.cache
def _render(path: Path) -> tuple[dict, ...]:
    result = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True,
                            timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {path} failed:\n{result.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render(path: str | Path) -> list[dict]:
    """Every object `kubectl kustomize path` renders (path: absolute, or relative to the
    repository root, e.g. "k8s/overlays/cpu"). Each call returns fresh copies."""
    return copy.deepcopy(list(_render(_resolve(path))))


def prometheus_rule_groups() -> list[dict]:
    """The rule groups of the deployment's PrometheusRule, ready for ``{"groups": ...}``."""
    docs = [d for d in yaml.safe_load_all(RULES_FILE.read_text()) if d]
    rules = [d for d in docs if d.get("kind") == "PrometheusRule"]
    if len(rules) != 1:
        raise ValueError(f"{RULES_FILE} should hold one PrometheusRule, not {len(rules)}")
    return copy.deepcopy(rules[0]["spec"]["groups"])
