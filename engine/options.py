"""How to open an engine: one options model that the service settings, the batch job, export,
train and evaluate share, and the one function that opens an engine from a bundle reference.

The knobs an operator turns (device, threads, tokens per model call, the long-text rule and its
window count) are declared here once; the service reads them from ``TEXTCLS_*`` variables
(service/settings.py subclasses this model), the CLI from its options.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.system import DEFAULT_BATCH_TOKENS, available_cores
from engine.bundle import Bundle, override_long_texts, resolve_bundle
from engine.long_texts import RULES, LongTextRule

if TYPE_CHECKING:
    from engine.engine import Engine

Device = Literal["auto", "cpu", "cuda"]


class EngineOptions(BaseModel):
    """What a stage may choose about the engine it opens; every field has the engine's default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device: Device = Field(
        default="auto",
        description="Execution provider: `auto` picks CUDA (with the bundle's GPU variant) when "
        "onnxruntime-gpu sees a GPU, else CPU (with the CPU variant); `cuda` fails at start-up "
        "when no GPU is usable.",
    )
    threads: int = Field(
        default_factory=available_cores,
        ge=1,
        description="ONNX Runtime intra-op threads per model. Default: the cores this process may "
        "use (os.sched_getaffinity). Under a Kubernetes CPU limit set it to the limit: affinity "
        "does not see CFS quotas.",
    )
    batch_tokens: int = Field(
        default=DEFAULT_BATCH_TOKENS,
        ge=16,
        le=1_000_000,
        description="Padded tokens per ONNX Runtime call: a batch's texts, sorted by length, go "
        "to the model in calls of as many texts as fit (text-embeddings-inference's "
        "max-batch-tokens). The default was fastest on this CPU for one-text and mixed-length "
        "loads (docs/benchmarks.md).",
    )
    long_texts: str = Field(
        default="",
        description="What the model reads of a text over its max_length tokens: `truncate` (its "
        "start), `head_tail` (its start and its end) or `chunk` (windows over the whole text, at "
        "most TEXTCLS_MAX_WINDOWS, their logits averaged). Empty: the rule the bundle records, "
        "the one it was trained with (docs/service.md#long-texts).",
    )
    max_windows: int | None = Field(
        default=None,
        ge=1,
        description="`chunk`: most windows (model inputs) read of one text; a longer text is read "
        "by that many spread over it. Empty: the bundle's. Each window costs a model input.",
    )

    @field_validator("long_texts", mode="before")
    @classmethod
    def _long_text_rule(cls, rule: object) -> object:
        if rule is None:
            return ""
        if isinstance(rule, str):
            rule = rule.strip()
            if rule and rule not in RULES:
                raise ValueError(f"{rule!r} is not a long-text rule: give {', '.join(RULES)}, or "
                                 "leave it empty for the rule the bundle records")
        return rule

    @field_validator("max_windows", mode="before")
    @classmethod
    def _empty_is_the_bundles(cls, value: object) -> object:
        # `TEXTCLS_MAX_WINDOWS=` (as in a ConfigMap) means unset
        return None if isinstance(value, str) and not value.strip() else value

    def long_text_rule(self, recorded: LongTextRule) -> LongTextRule:
        """``recorded`` (the bundle's or checkpoint's rule) with what these options override."""
        return override_long_texts(recorded, self.long_texts or None, self.max_windows)

    def engine_options(self) -> "EngineOptions":
        """Just the engine's fields (a subclass, such as the service settings, carries more)."""
        return EngineOptions(**{name: getattr(self, name) for name in EngineOptions.model_fields})


def open_engine(ref: str | Path | Bundle, options: EngineOptions | None = None, *,
                variant: str | None = None, allow_failed: bool = False,
                calibrated: bool = True) -> Engine:
    """The engine for a bundle: a ``Bundle``, a directory, or a BentoML store tag (``topic``,
    ``topic:VERSION``). ``variant`` None: the one the bundle serves on the chosen device."""
    # imported here: the options are read where no engine is opened (`textcls score --url`, the
    # CLI's parsing), and the engine loads ONNX Runtime
    from engine.engine import Engine

    options = options or EngineOptions()
    bundle = ref if isinstance(ref, Bundle) else resolve_bundle(ref)
    return Engine(
        bundle,
        variant=variant,
        device=options.device,
        threads=options.threads,
        batch_tokens=options.batch_tokens,
        allow_failed=allow_failed,
        long_texts=options.long_text_rule(bundle.long_texts),
        calibrated=calibrated,
    )
