"""The evaluate stage: ``EvaluateConfig`` -> ``evaluate`` -> ``EvaluationResult``.

A served bundle is measured on the serving engine, opened as the service opens it
(``engine.options.open_engine``), so the figures are those of what is served: the same variant, the
same long-text rule, the same batches of ``EVAL_BATCH_SIZE`` texts as the export's accuracy check
(dynamic int8 moves with batch neighbours). A fine-tuned checkpoint is measured with PyTorch, the
reference the export compares its variants against. Both write one report (train/report.py).

For a bundle the scores as served are also measured for calibration: ECE with the bundle's
temperatures and without, against the floor a perfectly calibrated model would show on this file.
A checkpoint gets none: PyTorch's scores are never served.

Torch is imported only for a checkpoint, inside the function that needs it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from core.errors import UserError
from engine.bundle import MANIFEST, BundleError, describe_long_texts, resolve_bundle
from engine.long_texts import LongTextRule
from engine.options import EngineOptions, open_engine
from engine.scores import softmax
from train.data import LabelledData, check_known_labels, load_labelled
from train.report import (
    BINS,
    CONFUSION_PLOT,
    EVAL_BATCH_SIZE,
    RELIABILITY_PLOT,
    Evaluation,
    ece_floor,
    evaluate as score_predictions,
    expected_calibration_error,
    reliability,
    reliability_diagram,
    write_report,
)


class EvaluateConfig(BaseModel):
    """One evaluation: which model, on which labelled file, where the report goes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="a task name (its latest bundle in the BentoML store: what "
                       "`bentoml serve` serves), a store tag (topic:VERSION), a bundle directory, "
                       "or a fine-tuned HF checkpoint directory (evaluated with PyTorch)")
    data: str = Field(description="labelled CSV, JSONL or Parquet file")
    variant: str | None = Field(None, description="bundle variant; default: the one the engine "
                                "serves on this device. Named on purpose, it is measured even when "
                                "the export failed it (to see by how much)")
    output: Path | None = Field(None, description="report directory; default "
                                "reports/<model>-<variant>")
    text_column: str = "text"
    label_column: str = "label"
    batch_size: int = Field(EVAL_BATCH_SIZE, ge=1, description="texts per engine call; the "
                            "export's accuracy check uses EVAL_BATCH_SIZE, so the figures agree")
    engine: EngineOptions = Field(default_factory=EngineOptions, description="how the engine is "
                                  "opened; for a checkpoint only the long-text rule, its window "
                                  "count and threads apply")


class EvaluateProgress:
    """What ``evaluate`` reports while it runs; the CLI prints it and draws a bar. These do nothing."""

    def start(self, model: str, texts: int, long_texts: LongTextRule) -> None:
        """The model is open and reads long texts by ``long_texts``; ``texts`` to predict."""

    def advance(self, texts: int) -> None:
        """``texts`` more predicted."""

    def note(self, message: str) -> None:
        """Something the user should know about the figures (a variant the export failed)."""


@dataclass(frozen=True)
class LongTextCost:
    """What the long-text rule cost on the file: texts over max_length tokens, the model inputs
    made of them, and the model inputs of every text."""

    texts_over_max_length: int = 0
    long_text_windows: int = 0
    model_inputs: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class CalibrationFigures:
    """How calibrated the scores as served are: ECE with the bundle's temperatures (``ece``) and
    without (``ece_uncalibrated``), the ECE a perfectly calibrated model would show on this file
    (``ece_floor``), and the per-bin table of the served scores."""

    temperature: float
    window_temperature: float
    ece: float
    ece_floor: float
    ece_uncalibrated: float
    bins: int
    reliability: list[dict]

    def to_dict(self) -> dict:
        """The report's keys (report.json)."""
        return {"temperature": self.temperature, "window_temperature": self.window_temperature,
                "ece": self.ece, "ece_floor": self.ece_floor, "ece_uncalibrated": self.ece_uncalibrated,
                "ece_bins": self.bins, "reliability": self.reliability}


@dataclass
class EvaluationResult:
    model: str  # display name: task-variant (bundle) or directory-pytorch, plus any rule override
    data: str  # the labelled file, as train.data names it
    evaluation: Evaluation  # accuracy, macro-F1, per-class figures, confusion matrix, report text
    long_texts: LongTextRule  # the rule the model read long texts by
    seconds: float  # predicting, model loading excluded
    output: Path  # the report directory
    plots: dict[str, Path] = field(default_factory=dict)  # caption -> PNG written there
    variant: str | None = None  # None: a checkpoint, run with PyTorch
    cost: LongTextCost | None = None  # None for a checkpoint
    calibration: CalibrationFigures | None = None  # None for a checkpoint

    @property
    def accuracy(self) -> float:
        return self.evaluation.accuracy

    @property
    def macro_f1(self) -> float:
        return self.evaluation.macro_f1

    @property
    def n(self) -> int:
        return self.evaluation.n

    @property
    def report(self) -> Path:
        return self.output / "report.md"

    def to_dict(self) -> dict:
        """The figures in one JSON-ready mapping (the line `textcls evaluate` prints)."""
        out = {"model": self.model, "data": self.data, "accuracy": round(self.accuracy, 4),
               "macro_f1": round(self.macro_f1, 4), "n": self.n, "long_texts": self.long_texts.to_dict()}
        if self.cost is not None:
            out.update(self.cost.to_dict())
        if self.calibration is not None:
            out.update(ece=round(self.calibration.ece, 4), ece_floor=round(self.calibration.ece_floor, 4))
        return out


def evaluate(config: EvaluateConfig, progress: EvaluateProgress | None = None) -> EvaluationResult:
    """Predict every text of ``config.data`` with the model, write the report, return the figures.

    UserError (with what to fix) for a file or model that cannot be read, and for labels the
    model does not know."""
    progress = progress or EvaluateProgress()
    dataset = load_labelled(config.data, text_column=config.text_column,
                            label_column=config.label_column, split="test")
    model = _open(config, progress)
    check_known_labels(dataset, model.labels)
    progress.start(model.name, len(dataset), model.long_texts)
    predicted: list[str] = []
    started = time.perf_counter()
    for i in range(0, len(dataset), config.batch_size):
        chunk = dataset.texts[i : i + config.batch_size]
        predicted += model.predict(chunk)
        progress.advance(len(chunk))
    seconds = time.perf_counter() - started

    evaluation = score_predictions(dataset.labels, predicted, model.labels)
    output = config.output or Path("reports") / model.name.replace(":", "-").replace("/", "_")
    title = f"{model.name} on {dataset.source}"
    calibration = model.calibration(dataset, output, title)  # draws RELIABILITY_PLOT there
    plots = {"reliability diagram": output / RELIABILITY_PLOT} if calibration is not None else {}
    write_report(evaluation, output, title,
                 {"seconds": round(seconds, 1), "texts_per_second": round(len(dataset) / seconds, 1),
                  "long_texts": describe_long_texts(model.long_texts),
                  **(model.cost.to_dict() if model.cost else {}),
                  **(calibration.to_dict() if calibration else {})},
                 figures={caption: path.name for caption, path in plots.items()} or None)
    return EvaluationResult(
        model=model.name, data=dataset.source, evaluation=evaluation, long_texts=model.long_texts,
        seconds=seconds, output=output,
        plots={"confusion matrix": output / CONFUSION_PLOT, **plots},
        variant=model.variant, cost=model.cost, calibration=calibration,
    )


def is_checkpoint(ref: str | Path) -> bool:
    """A fine-tuned HF checkpoint directory (config.json, no bundle manifest)."""
    path = Path(ref)
    return path.is_dir() and (path / "config.json").is_file() and not (path / MANIFEST).is_file()


def _open(config: EvaluateConfig, progress: EvaluateProgress) -> _BundleModel | _CheckpointModel:
    # a rule asked for is in the name, so reports of one model under two rules do not collide
    options = config.engine
    suffix = "".join(f"-{part}" for part in
                     (options.long_texts, options.max_windows and f"{options.max_windows}windows") if part)
    if is_checkpoint(config.model):
        if config.variant:
            raise UserError("--variant applies to bundles; a checkpoint is evaluated with PyTorch.")
        return _CheckpointModel(Path(config.model), options, suffix)
    return _BundleModel(config, suffix, progress)


class _BundleModel:
    """A bundle on the serving engine. Keeps every text's logits and the temperature the engine
    divided them by, for the calibration figures, and counts what the long-text rule costs."""

    def __init__(self, config: EvaluateConfig, suffix: str, progress: EvaluateProgress) -> None:
        try:
            bundle = resolve_bundle(config.model)
            self.engine = open_engine(bundle, config.engine, variant=config.variant,
                                      allow_failed=config.variant is not None)
        except BundleError as exc:
            raise UserError(str(exc)) from exc
        self.variant = self.engine.variant
        if bundle.verdict(self.variant) == "failed":
            progress.note(f"variant {self.variant} failed the export's checks and is never served "
                          f"({bundle.variants[self.variant].get('failure')})")
        self.name = f"{bundle.task}-{self.variant}{suffix}"
        self.labels = self.engine.labels
        self.long_texts = self.engine.long_texts
        self._cost = {"texts_over_max_length": 0, "long_text_windows": 0, "model_inputs": 0}
        self._logits: list[np.ndarray] = []
        self._temperatures: list[np.ndarray] = []

    @property
    def cost(self) -> LongTextCost:
        return LongTextCost(**self._cost)

    def predict(self, texts: list[str]) -> list[str]:
        result = self.engine.run(texts)
        self._logits.append(result.logits)
        self._temperatures.append(self.engine.temperatures(result.windows))
        long = result.long_text_windows()
        self._cost["texts_over_max_length"] += len(long)
        self._cost["long_text_windows"] += sum(long)
        self._cost["model_inputs"] += sum(result.windows)
        return [p.label for p in result.predictions]

    def calibration(self, dataset: LabelledData, output: Path, title: str) -> CalibrationFigures:
        """The ECE of the scores as served (softmax of the logits over the bundle's temperatures)
        and with none, and the reliability diagram of both in ``output``."""
        logits, temperatures = np.concatenate(self._logits), np.concatenate(self._temperatures)
        one, windows = self.engine.temperature, self.engine.window_temperature
        index = {label: i for i, label in enumerate(self.labels)}
        label_ids = np.array([index[label] for label in dataset.labels])
        served, plain = softmax(logits, temperatures), softmax(logits)
        name = f"T = {one:.3g}" + (f", {windows:.3g} for texts read in windows" if windows != one else "")
        reliability_diagram(plain, served if (temperatures != 1.0).any() else None, label_ids,
                            output / RELIABILITY_PLOT, title,
                            names=("uncalibrated (T = 1)", f"as served ({name})"))
        return CalibrationFigures(
            temperature=one, window_temperature=windows,
            ece=expected_calibration_error(served, label_ids), ece_floor=ece_floor(served, BINS)["mean"],
            ece_uncalibrated=expected_calibration_error(plain, label_ids), bins=BINS,
            reliability=reliability(served, label_ids))


class _CheckpointModel:
    """A fine-tuned checkpoint with PyTorch in fp32, by the rule it was trained with unless the
    options override it."""

    variant = None
    cost = None

    def __init__(self, path: Path, options: EngineOptions, suffix: str) -> None:
        import torch

        from train.finetune import torch_predictor, trained_long_texts, trained_max_length

        torch.set_num_threads(options.threads)
        self.long_texts = options.long_text_rule(trained_long_texts(path))
        self.predict, self.labels = torch_predictor(path, trained_max_length(path), self.long_texts)
        self.name = f"{path.name}-pytorch{suffix}"

    def calibration(self, dataset: LabelledData, output: Path, title: str) -> None:
        return None
