"""Model bundles: the artifact the export stage writes and the engine serves.

A bundle is a directory holding ONNX variants, the tokenizer (``tokenizer.json``) and a
``manifest.json`` that names the task, the labels in logit order, the maximum sequence length,
the variants with their parity figures, and the source checkpoint. Bundles live in the BentoML
model store under the task's name (``sentiment``, ``topic``).

This module must stay free of torch: the serving path imports it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from engine.long_texts import LongTextRule

MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"
EXPLAIN = "explain"  # the variant engine/explain.py opens
IMAGE_NOTE = ("(A container image packs only the variants its device serves: the CPU image has no "
              "fp16 graph, the GPU image no int8; docs/deploy.md#what-the-image-holds.)")
FORMAT_VERSION = 1


class BundleError(Exception):
    """A bundle is missing, incomplete or unusable; the message says what to fix."""


@dataclass
class Bundle:
    path: Path
    manifest: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> "Bundle":
        path = Path(path)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise BundleError(
                f"{path} is not a model bundle: it has no {MANIFEST}. "
                "Make one with `textcls export <checkpoint> --task <task>`."
            )
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise BundleError(f"{manifest_path} is not valid JSON: {exc}") from exc
        missing = [k for k in ("task", "labels", "max_length", "variants") if k not in manifest]
        if missing:
            raise BundleError(f"{manifest_path} lacks the keys {missing}; re-export the bundle.")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise BundleError(
                f"{manifest_path} has format_version {manifest.get('format_version')!r}; "
                f"this version of textcls reads {FORMAT_VERSION}. Re-export the bundle."
            )
        bundle = cls(path=path, manifest=manifest)
        if not (path / TOKENIZER).is_file():
            raise BundleError(f"{path} has no {TOKENIZER}; re-export the bundle.")
        return bundle

    @property
    def task(self) -> str:
        return self.manifest["task"]

    @property
    def labels(self) -> list[str]:
        return list(self.manifest["labels"])

    @property
    def max_length(self) -> int:
        return int(self.manifest["max_length"])

    @property
    def long_texts(self) -> LongTextRule:
        """What the model reads of texts over max_length tokens (truncate for older bundles)."""
        try:
            return LongTextRule.from_dict(self.manifest.get("long_texts"))
        except (TypeError, ValueError) as exc:
            raise BundleError(f"{self.path / MANIFEST} has an invalid long_texts entry: {exc}; "
                              "re-export the bundle.") from exc

    @property
    def temperature(self) -> float:
        """The softmax temperature the export fitted on the dev file for texts read in one window
        (1.0: not calibrated)."""
        return self._temperature("temperature", 1.0)

    @property
    def window_temperature(self) -> float:
        """The temperature of texts read through several windows (their logits averaged); the
        one-window temperature when the export had too few such texts to fit it (or predates it)."""
        return self._temperature("window_temperature", self.temperature)

    def _temperature(self, key: str, default: float) -> float:
        value = (self.manifest.get("calibration") or {}).get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise BundleError(f"{self.path / MANIFEST} has calibration {key} {value!r}; "
                              "it must be a positive number. Re-export the bundle.")
        return float(value)

    @property
    def pad_token_id(self) -> int:
        return int(self.manifest.get("pad_token_id", 0))

    @property
    def variants(self) -> dict[str, dict[str, Any]]:
        return self.manifest["variants"]

    @property
    def cpu_variant(self) -> str | None:
        """The variant served on CPU, chosen by the export among those that passed; None when none
        did (such a bundle is never stored, but a directory can still hold one)."""
        return self.manifest.get("cpu_variant")

    @property
    def gpu_variant(self) -> str | None:
        return self.manifest.get("gpu_variant")

    def verdict(self, name: str) -> str:
        """passed, failed or unchecked: what the export's checks said of a variant. Bundles written
        before verdicts existed recorded ``passed`` as true, false or null."""
        entry = self.variants.get(name, {})
        if "verdict" in entry:
            return entry["verdict"]
        return {True: "passed", False: "failed"}.get(entry.get("passed"), "unchecked")

    @property
    def version(self) -> str:
        """Short id of the source checkpoint, so a served prediction can be traced to it."""
        return self.manifest.get("source", {}).get("sha256", "unknown")[:12]

    @property
    def file_hashes(self) -> dict[str, str]:
        """sha256 of every file of the bundle as the export wrote it (empty for bundles exported
        before the export recorded them)."""
        return dict(self.manifest.get("files", {}))

    def verify(self, names: list[str]) -> bool:
        """Check that the named files are those the export wrote and checked; BundleError when one
        is missing or changed. False when the manifest records no hashes (nothing to check)."""
        hashes = self.file_hashes
        if not hashes:
            return False
        for name in names:
            file = self.path / name
            if name not in hashes:
                raise BundleError(f"bundle {self.path}: {name} is not among the files its manifest "
                                  "lists; re-export the bundle.")
            if not file.is_file():
                raise BundleError(f"bundle {self.path} is missing its file {name}; re-export the "
                                  f"bundle. {IMAGE_NOTE}")
            actual = file_sha256(file)
            if actual != hashes[name]:
                raise BundleError(
                    f"bundle {self.path}: {name} does not match its manifest (sha256 {actual[:12]}, "
                    f"exported as {hashes[name][:12]}): the file changed after the export checked "
                    "it. Refusing to serve it; re-export the bundle.")
        return True

    def served_variants(self, device: str) -> list[str]:
        """The variants a server on ``device`` (cpu or cuda) opens: the one the engine picks there
        (on cuda the GPU variant, else the CPU one, as ``Engine`` chooses) and ``explain`` when
        the bundle has it and it did not fail (``Explainer``)."""
        if device not in ("cpu", "cuda"):
            raise BundleError(f"device must be cpu or cuda, not {device!r}.")
        chosen = (self.gpu_variant if device == "cuda" else None) or self.cpu_variant
        if chosen is None:
            raise BundleError(f"bundle {self.path} has no CPU variant that passed the export's "
                              "checks; re-export it.")
        served = [chosen]
        if EXPLAIN in self.variants and self.verdict(EXPLAIN) != "failed":
            served.append(EXPLAIN)
        return served

    def unserved_files(self, device: str) -> list[str]:
        """The variant files a server on ``device`` never opens (what an image for it leaves
        out), by path relative to the bundle. A file a served variant shares is kept."""
        keep = {self.variants[v]["file"] for v in self.served_variants(device)}
        return sorted({entry["file"] for entry in self.variants.values()} - keep)

    def variant_path(self, name: str) -> Path:
        if name not in self.variants:
            raise BundleError(
                f"bundle {self.path} has no variant {name!r}; it has {sorted(self.variants)}."
            )
        file = self.path / self.variants[name]["file"]
        if not file.is_file():
            raise BundleError(f"variant {name!r} of bundle {self.path} is missing its file "
                              f"{file.name}. {IMAGE_NOTE}")
        return file


def override_long_texts(recorded: LongTextRule, rule: str | None = None,
                        max_windows: int | None = None) -> LongTextRule:
    """``recorded`` (a bundle's or a checkpoint's long-text rule) with the rule and the window
    count an operator chose (TEXTCLS_LONG_TEXTS, --long-texts; TEXTCLS_MAX_WINDOWS, --max-windows);
    None or empty keeps the recorded value, as do its overlap and head."""
    changes: dict[str, Any] = {}
    if rule:
        changes["rule"] = rule
    if max_windows is not None:
        changes["max_windows"] = max_windows
    return replace(recorded, **changes)  # checked again by LongTextRule.__post_init__


def describe_long_texts(rule: LongTextRule) -> str:
    """The rule in a few words, for logs and reports."""
    if rule.rule == "chunk":
        return f"chunk (at most {rule.max_windows} windows, {rule.overlap} tokens shared)"
    if rule.rule == "head_tail":
        return f"head_tail ({rule.head} tokens from the start, the rest from the end)"
    return rule.rule


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_files(path: Path) -> dict[str, str]:
    """sha256 of every file of a bundle directory but its manifest, by relative path."""
    return {f.relative_to(path).as_posix(): file_sha256(f)
            for f in sorted(path.rglob("*")) if f.is_file() and f.name != MANIFEST}


def resolve_bundle(ref: str | Path) -> Bundle:
    """A bundle from a directory path, or from the BentoML store by tag (``topic``, ``topic:v1``).

    A bare task name means that task's latest bundle: the one ``bentoml serve`` would serve.
    Inside a Bento container a tag is looked up first among the models packed into the Bento
    (``$BENTO_PATH/models``), which is where `bentoml serve` reads them, while a plain process
    there (the batch Job, `textcls evaluate`) would look in ``$BENTOML_HOME/models``, empty there.
    """
    path = Path(ref)
    if path.is_dir():
        return Bundle.load(path)
    ref = str(ref)
    if "/" in ref or ref.startswith("."):
        raise BundleError(f"no bundle directory at {ref}.")
    packed = _packed_in_bento(ref)
    if packed is not None:
        return Bundle.load(packed)
    import bentoml  # imported here: loading a bundle from a path needs no BentoML

    tag = ref if ":" in ref else f"{ref}:latest"
    try:
        model = bentoml.models.get(tag)
    except bentoml.exceptions.NotFound as exc:
        raise BundleError(
            f"no model {tag!r} in the BentoML store ({_store_path()}). Build one with "
            f"`textcls export <checkpoint> --task {ref.split(':')[0]}` or `make models`."
        ) from exc
    return Bundle.load(model.path)


def _packed_in_bento(ref: str) -> Path | None:
    """The directory of store tag ``ref`` among the Bento's packed models, when running in one."""
    bento = os.environ.get("BENTO_PATH")
    packed = Path(bento, "models") if bento else None
    if packed is None or not packed.is_dir():
        return None
    name, _, version = ref.partition(":")
    if version in ("", "latest") and (packed / name / "latest").is_file():
        version = (packed / name / "latest").read_text().strip()
    return packed / name / version if version and (packed / name / version).is_dir() else None


def _store_path() -> str:
    home = os.environ.get("BENTOML_HOME", os.path.expanduser("~/bentoml"))
    return os.path.join(home, "models")
