"""Model bundles: the artifact the export stage writes and the engine serves.

A bundle is a directory holding ONNX variants, the tokenizer (``tokenizer.json``) and a
``manifest.json`` that names the task, the labels in logit order, the maximum sequence length,
the variants with their parity figures, and the source checkpoint. Bundles live in the BentoML
model store under the task's name (``sentiment``, ``topic``).

``Manifest`` is the one description of ``manifest.json``: the export builds one and writes it with
``Manifest.write``, everything else reads it with ``Manifest.read`` (through ``Bundle.load``).
Manifests of an older ``format_version`` are upgraded on reading by ``migrate``, the one place that
knows what older exports left out, so no reader needs a fallback of its own.

This module must stay free of torch: the serving path imports it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, ValidationError, \
    field_validator, model_validator

from engine.long_texts import LongTextRule

MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"
EXPLAIN = "explain"  # the variant engine/explain.py opens
IMAGE_NOTE = ("(A container image packs only the variants its device serves: the CPU image has no "
              "fp16 graph, the GPU image no int8; docs/deploy.md#what-the-image-holds.)")
# 2: every key the engine reads is written (pad_token_id, long_texts, both temperatures, verdicts)
# and the CPU variant's choice is recorded (cpu_choice). 1 is still read, through migrate().
FORMAT_VERSION = 2
READS = (1, 2)
PASSED, FAILED, UNCHECKED = "passed", "failed", "unchecked"
Verdict = Literal["passed", "failed", "unchecked"]


class BundleError(Exception):
    """A bundle is missing, incomplete or unusable; the message says what to fix."""


# --- the manifest ------------------------------------------------------------------------------

class ManifestPart(BaseModel):
    """Every part of the manifest keeps keys it does not know (a newer export's figures), so that
    reading and writing a manifest back never loses what it recorded, and validates assignments,
    so that the export cannot record what a reader would refuse."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, protected_namespaces=())

    def to_dict(self) -> dict[str, Any]:
        """The JSON object as written: the keys that were given, not the defaults of absent ones."""
        return self.model_dump(mode="json", exclude_unset=True)


class Bound(ManifestPart):
    max_abs_logit_diff: float  # against PyTorch on the sample texts
    min_label_agreement: float


class Parity(ManifestPart):
    samples: int
    max_abs_logit_diff: float
    label_agreement: float


class AccuracyCheck(ManifestPart):
    """A variant's accuracy against PyTorch's on the evaluation file, with the paired test
    (export/bundle_export.py, AccuracyComparison)."""

    n: int
    pytorch_accuracy: float | None
    drop_points: float
    max_drop_points: float
    pytorch_only_right: int
    variant_only_right: int
    mcnemar_p: float
    significance: float
    worse: bool


class AttentionParity(ManifestPart):
    """The explain variant's attentions against PyTorch's (export/explain_export.py)."""

    samples: int
    max_abs_attention_diff: float
    max_row_sum_error: float
    bound: float


class Variant(ManifestPart):
    """One ONNX graph of the bundle and what the export's checks said of it. Figures stay absent
    where no check measured them: the export never claims a check it did not make."""

    file: str  # relative to the bundle directory
    device: Literal["cpu", "gpu"]
    verdict: Verdict = UNCHECKED  # before the checks ran
    checked: bool | None = None
    provider: str | None = None  # the execution provider the checks ran on
    bound: Bound | None = None
    parity: Parity | None = None
    accuracy: float | None = None
    accuracy_check: AccuracyCheck | None = None
    throughput_seq_per_s: float | None = None  # CPU candidates: the median of cpu_choice's rounds
    attention_parity: AttentionParity | None = None
    failure: str | None = None  # why it failed
    build_failure: str | None = None  # why it could not be built, or its build-time check failed
    reason: str | None = None  # why it is unchecked
    note: str | None = None


def _temperature(value: Any) -> float:
    # bool is an int to Python, and "2" would pass pydantic's lax float: both are mistakes here
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"it must be a positive number, not {value!r}")
    return float(value)


class CalibrationFile(ManifestPart):
    n: int
    n_windows: int
    ece_before: float
    ece_after: float
    ece_floor: float


class Calibration(ManifestPart):
    """The softmax temperatures the engine applies (export/calibration.py): ``temperature`` for
    texts read in one window, ``window_temperature`` for texts read through several. 1.0 with a
    ``reason`` and no ``fitted_on`` when the export did not calibrate."""

    temperature: float
    window_temperature: float
    fitted_on: list[str] | None = None
    reason: str | None = None
    variant: str | None = None
    n: int | None = None
    n_windows: int | None = None
    bins: int | None = None
    plot: str | None = None  # the reliability diagram in the bundle directory
    fitted_temperature: float | None = None  # a fit at the bound of the search, recorded, not applied
    fitted_window_temperature: float | None = None
    note: str | None = None
    window_note: str | None = None
    ece_before: float | None = None
    ece_after: float | None = None
    ece_floor: float | None = None
    nll_before: float | None = None
    nll_after: float | None = None
    files: dict[str, CalibrationFile] | None = None  # per calibration file, when there were several

    @field_validator("temperature", "window_temperature", mode="before")
    @classmethod
    def _positive(cls, value: Any) -> float:
        return _temperature(value)


class CpuChoice(ManifestPart):
    """Why the served CPU variant is the one it is (export/variant_choice.py): the preferred
    variant unless another passed one was measured at least ``margin`` times faster, in
    ``rounds`` interleaved timings of every candidate."""

    variant: str | None
    reason: str
    preference: list[str]
    margin: float
    rounds: int
    seq_per_s: dict[str, list[float]] = Field(default_factory=dict)  # every round, in order
    median_seq_per_s: dict[str, float] = Field(default_factory=dict)


class Source(ManifestPart):
    checkpoint: str
    sha256: str  # over the checkpoint's model files: what a served prediction traces back to
    base_model: str | None = None


class PytorchFigures(ManifestPart):
    accuracy: float | None = None  # on the evaluation file; None without one


class EvalInfo(ManifestPart):
    source: str
    n: int


def _long_text_rule(value: Any) -> LongTextRule:
    if isinstance(value, LongTextRule):
        return value
    try:
        return LongTextRule.from_dict(value)
    except TypeError as exc:  # pydantic reports ValueError; a TypeError would escape it
        raise ValueError(str(exc)) from exc


# The rule is the engine's frozen dataclass, checked by its own __post_init__; pydantic's lax
# coercion (the string "4" as a window count) would let a broken manifest through.
LongTexts = Annotated[LongTextRule, PlainValidator(_long_text_rule),
                      PlainSerializer(lambda rule: rule.to_dict(), return_type=dict)]


class Manifest(ManifestPart):
    """``manifest.json``: what the export built, checked and chose, and all the engine needs to
    serve it. ``to_dict()`` is the JSON object itself, for readers written against it (the
    export's printouts, the service's model info)."""

    format_version: Literal[2]
    task: str
    labels: list[str] = Field(min_length=2)  # in logit order
    max_length: int = Field(ge=1)
    pad_token_id: int = Field(ge=0)
    long_texts: LongTexts
    variants: dict[str, Variant]
    cpu_variant: str | None  # None: no CPU variant passed (such a bundle is never stored)
    gpu_variant: str | None
    cpu_choice: CpuChoice | None = None
    model_type: str | None = None
    source: Source | None = None
    created_at: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    # sha256 of every file as the export checked it; the engine refuses a file that differs
    files: dict[str, str] = Field(default_factory=dict)
    pytorch: PytorchFigures | None = None
    eval: EvalInfo | None = None
    calibration: Calibration | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    store_tag: str | None = None

    @model_validator(mode="after")
    def _served_variants_exist(self) -> "Manifest":
        for key in ("cpu_variant", "gpu_variant"):
            name = getattr(self, key)
            if name is not None and name not in self.variants:
                raise ValueError(f"names {key} {name!r}, which is not among its variants "
                                 f"{sorted(self.variants)}")
        return self

    @classmethod
    def read(cls, directory: str | Path) -> "Manifest":
        """The manifest of the bundle in ``directory``, of any format version this textcls reads;
        BundleError naming the file and what is wrong with it."""
        path = Path(directory) / MANIFEST
        if not path.is_file():
            raise BundleError(
                f"{Path(directory)} is not a model bundle: it has no {MANIFEST}. "
                "Make one with `textcls export <checkpoint> --task <task>`."
            )
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise BundleError(f"{path} is not valid JSON: {exc}") from exc
        return cls.from_dict(raw, where=path)

    @classmethod
    def from_dict(cls, raw: Any, where: str | Path = MANIFEST) -> "Manifest":
        """A manifest from its JSON object, migrated from an older format version if need be."""
        if not isinstance(raw, dict):
            raise BundleError(f"{where} holds a JSON {type(raw).__name__}, not an object; "
                              "re-export the bundle.")
        missing = [k for k in ("task", "labels", "max_length", "variants") if k not in raw]
        if missing:
            raise BundleError(f"{where} lacks the keys {missing}; re-export the bundle.")
        try:
            raw = migrate(raw)
        except ValueError as exc:
            raise BundleError(f"{where} {exc}") from exc
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise BundleError(f"{where} {_problems(exc)}; re-export the bundle.") from exc

    def write(self, directory: str | Path) -> Path:
        """Write ``manifest.json`` into ``directory``; checked first, as the reader will check it."""
        data = self.to_dict()
        type(self).from_dict(data, where=f"the manifest about to be written to {directory}")
        path = Path(directory) / MANIFEST
        path.write_text(json.dumps(data, indent=2) + "\n")
        return path


def migrate(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` (a manifest's JSON object) upgraded to FORMAT_VERSION; a copy, ``raw`` is untouched.

    Version 1 (textcls up to issue 22) could leave out what its readers then defaulted: an absent
    ``pad_token_id`` is 0 (BERT's [PAD]: bundles older than the key were BERT), an absent
    ``long_texts`` is truncate (bundles older than the rule), an absent calibration ``temperature``
    is 1.0 and an absent ``window_temperature`` the one-window temperature, an absent
    ``cpu_variant`` / ``gpu_variant`` none; variants recorded ``"passed": true/false/null``
    before verdicts existed (passed, failed, unchecked). ValueError for a version it cannot read."""
    version = raw.get("format_version")
    if version == FORMAT_VERSION:
        return raw
    if version not in READS:
        newer = isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION
        raise ValueError(
            f"has format_version {version!r}; this version of textcls reads "
            f"{' and '.join(map(str, READS))}. "
            + ("Upgrade textcls, or re-export the bundle with this one." if newer else "Re-export the bundle.")
        )
    out = copy.deepcopy(raw)
    out["format_version"] = FORMAT_VERSION
    out.setdefault("pad_token_id", 0)
    if out.get("long_texts") is None:
        out["long_texts"] = LongTextRule().to_dict()
    out.setdefault("cpu_variant", None)
    out.setdefault("gpu_variant", None)
    variants = out.get("variants")
    for entry in variants.values() if isinstance(variants, dict) else ():
        if isinstance(entry, dict) and "verdict" not in entry:
            entry["verdict"] = {True: PASSED, False: FAILED}.get(entry.get("passed"), UNCHECKED)
        if isinstance(entry, dict):
            entry.pop("passed", None)
    calibration = out.get("calibration")
    if isinstance(calibration, dict):
        calibration.setdefault("temperature", 1.0)
        calibration.setdefault("window_temperature", calibration["temperature"])
    return out


def _problems(exc: ValidationError, most: int = 6) -> str:
    """pydantic's errors as one line that names each key the way the manifest spells it."""
    missing, invalid = [], []
    for error in exc.errors():
        loc = " ".join(str(part) for part in error["loc"])
        if error["type"] == "missing":
            missing.append(loc)
            continue
        if error["type"] == "value_error":
            message = str(error["ctx"]["error"])
        else:
            message = f"{error['msg'][:1].lower()}{error['msg'][1:]}, not {error['input']!r}"
        invalid.append(f"has an invalid {loc} entry: {message}" if loc else message)
    problems = ([f"lacks the keys {missing}"] if missing else []) + invalid
    more = f"; and {len(problems) - most} more" if len(problems) > most else ""
    return "; ".join(problems[:most]) + more


# --- the bundle --------------------------------------------------------------------------------

@dataclass
class Bundle:
    path: Path
    manifest: Manifest

    @classmethod
    def load(cls, path: str | Path) -> "Bundle":
        path = Path(path)
        manifest = Manifest.read(path)
        if not (path / TOKENIZER).is_file():
            raise BundleError(f"{path} has no {TOKENIZER}; re-export the bundle.")
        return cls(path=path, manifest=manifest)

    @property
    def task(self) -> str:
        return self.manifest.task

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.labels)

    @property
    def max_length(self) -> int:
        return self.manifest.max_length

    @property
    def long_texts(self) -> LongTextRule:
        """What the model reads of texts over max_length tokens."""
        return self.manifest.long_texts

    @property
    def temperature(self) -> float:
        """The softmax temperature the export fitted on the dev file for texts read in one window
        (1.0: not calibrated)."""
        calibration = self.manifest.calibration
        return calibration.temperature if calibration is not None else 1.0

    @property
    def window_temperature(self) -> float:
        """The temperature of texts read through several windows (their logits averaged); the
        one-window temperature when the export had too few such texts to fit it apart."""
        calibration = self.manifest.calibration
        return calibration.window_temperature if calibration is not None else 1.0

    @property
    def pad_token_id(self) -> int:
        return self.manifest.pad_token_id

    @property
    def variants(self) -> dict[str, dict[str, Any]]:
        """Each variant's entry as the JSON object the manifest holds, for readers written against
        it; ``manifest.variants`` has the typed entries."""
        return {name: entry.to_dict() for name, entry in self.manifest.variants.items()}

    @property
    def cpu_variant(self) -> str | None:
        """The variant served on CPU, chosen by the export among those that passed; None when none
        did (such a bundle is never stored, but a directory can still hold one)."""
        return self.manifest.cpu_variant

    @property
    def gpu_variant(self) -> str | None:
        return self.manifest.gpu_variant

    def verdict(self, name: str) -> str:
        """passed, failed or unchecked: what the export's checks said of a variant (unchecked for
        one the bundle does not have)."""
        entry = self.manifest.variants.get(name)
        return entry.verdict if entry is not None else UNCHECKED

    @property
    def version(self) -> str:
        """Short id of the source checkpoint, so a served prediction can be traced to it."""
        source = self.manifest.source
        return source.sha256[:12] if source is not None else "unknown"

    @property
    def file_hashes(self) -> dict[str, str]:
        """sha256 of every file of the bundle as the export wrote it (empty for bundles exported
        before the export recorded them)."""
        return dict(self.manifest.files)

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
        if EXPLAIN in self.manifest.variants and self.verdict(EXPLAIN) != FAILED:
            served.append(EXPLAIN)
        return served

    def unserved_files(self, device: str) -> list[str]:
        """The variant files a server on ``device`` never opens (what an image for it leaves
        out), by path relative to the bundle. A file a served variant shares is kept."""
        variants = self.manifest.variants
        keep = {variants[v].file for v in self.served_variants(device)}
        return sorted({entry.file for entry in variants.values()} - keep)

    def variant_path(self, name: str) -> Path:
        if name not in self.manifest.variants:
            raise BundleError(
                f"bundle {self.path} has no variant {name!r}; it has {sorted(self.manifest.variants)}."
            )
        file = self.path / self.manifest.variants[name].file
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
