"""Evaluation reports: accuracy, macro-F1, per-class precision/recall, a confusion-matrix PNG,
how calibrated the scores are (ECE, reliability diagram), and the explanation heatmap.

One writer serves training (held-out file), export (per variant), the evaluate stage
(train/evaluate.py) and `textcls explain`, so every report reads the same. The calibration figures
measure scores; fitting a temperature is the export's (export/calibration.py), which measures
with these. Torch-free: numpy, scikit-learn and matplotlib.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score


# Texts per engine call when measuring accuracy, in `textcls evaluate` and in the export's checks.
# The same for both on purpose: dynamic int8 picks activation scales per batch, so a borderline
# text can flip with its batch neighbours, and the two figures must agree.
EVAL_BATCH_SIZE = 64
CONFUSION_PLOT = "confusion_matrix.png"
RELIABILITY_PLOT = "reliability.png"
BINS = 15  # bins of the top-class score for ECE and the reliability diagram (Guo et al.'s choice)


@dataclass
class Evaluation:
    accuracy: float
    macro_f1: float
    n: int
    labels: list[str]
    per_class: dict[str, dict[str, float]]
    confusion: list[list[int]]
    report_text: str

    def to_dict(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "n": self.n,
            "labels": self.labels,
            "per_class": self.per_class,
            "confusion_matrix": self.confusion,
        }


def evaluate(y_true: list[str], y_pred: list[str], labels: list[str]) -> Evaluation:
    report = classification_report(
        y_true, y_pred, labels=labels, output_dict=True, zero_division=0, digits=4
    )
    per_class = {
        label: {k: float(report[label][k]) for k in ("precision", "recall", "f1-score", "support")}
        for label in labels
    }
    return Evaluation(
        accuracy=float(accuracy_score(y_true, y_pred)),
        macro_f1=float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        n=len(y_true),
        labels=list(labels),
        per_class=per_class,
        confusion=confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        report_text=classification_report(
            y_true, y_pred, labels=labels, zero_division=0, digits=4
        ),
    )


def write_report(evaluation: Evaluation, out_dir: str | Path, title: str, extra: dict | None = None,
                 figures: dict[str, str] | None = None) -> Path:
    """report.json, report.md and CONFUSION_PLOT in out_dir; returns out_dir. ``figures``:
    caption -> file name of further images the caller wrote in out_dir, shown in report.md."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"title": title, **evaluation.to_dict(), **(extra or {})}
    (out / "report.json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = [
        f"# {title}",
        "",
        f"- examples: {evaluation.n}",
        f"- accuracy: {evaluation.accuracy:.4f}",
        f"- macro-F1: {evaluation.macro_f1:.4f}",
    ]
    lines += [f"- {k}: {v}" for k, v in (extra or {}).items() if not isinstance(v, (dict, list))]
    lines += ["", "```", evaluation.report_text.rstrip(), "```", "", f"![confusion matrix]({CONFUSION_PLOT})", ""]
    lines += [line for caption, file in (figures or {}).items() for line in (f"![{caption}]({file})", "")]
    (out / "report.md").write_text("\n".join(lines))
    plot_confusion(evaluation, out / CONFUSION_PLOT, title)
    return out


def plot_confusion(evaluation: Evaluation, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display here or in CI
    import matplotlib.pyplot as plt

    matrix = np.array(evaluation.confusion)
    n = len(evaluation.labels)
    fig, ax = plt.subplots(figsize=(1.6 * n + 2.4, 1.4 * n + 2))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), evaluation.labels, rotation=30, ha="right")
    ax.set_yticks(range(n), evaluation.labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}\naccuracy {evaluation.accuracy:.3f}, macro-F1 {evaluation.macro_f1:.3f}", fontsize=9)
    threshold = matrix.max() / 2 if matrix.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center",
                    color="white" if matrix[i, j] > threshold else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- calibration: how far the scores are from the accuracy they claim -----------------------
# ECE: texts binned by their top-class score into equal-width bins, sum over bins of
# (texts in bin / n) * |accuracy - mean score|, a fraction (0.05: scores 5 points off on average).
# On a dev file of a thousand texts it is noisy and biased upwards; ``ece_floor`` measures that
# floor for the scores at hand, so a figure can be read against it.


def expected_calibration_error(probs: np.ndarray, label_ids: np.ndarray, bins: int = BINS) -> float:
    """ECE as a fraction in [0, 1]: sum over bins of (count / n) * |accuracy - confidence|."""
    confidence, correct, which = _binned(probs, label_ids, bins)
    n = len(confidence)
    conf_sum = np.bincount(which, weights=confidence, minlength=bins)
    right_sum = np.bincount(which, weights=correct.astype(np.float64), minlength=bins)
    return float(np.abs(right_sum - conf_sum).sum() / n) if n else 0.0


def ece_floor(probs: np.ndarray, bins: int = BINS, draws: int = 400, seed: int = 0) -> dict:
    """The ECE that a perfectly calibrated model with these scores would show on this many texts:
    each text's prediction drawn right with probability its top score, ``draws`` times. Its mean
    is the estimator's bias (what an ECE figure of this file cannot go below, on average), its
    90th percentile what a calibrated model exceeds one time in ten."""
    probs = np.asarray(probs, dtype=np.float64)
    predicted = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    other = (predicted + 1) % probs.shape[1]  # any wrong label: ECE only asks right or wrong
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(draws):
        right = rng.random(len(probs)) < confidence
        values.append(expected_calibration_error(probs, np.where(right, predicted, other), bins))
    return {"mean": float(np.mean(values)), "p90": float(np.percentile(values, 90)), "draws": draws}


def reliability(probs: np.ndarray, label_ids: np.ndarray, bins: int = BINS) -> list[dict]:
    """Per equal-width bin of the top-class score, (lower, upper]: how many texts fell in it, their
    mean score (``confidence``) and the fraction of them predicted right (``accuracy``); both None
    for an empty bin."""
    confidence, correct, which = _binned(probs, label_ids, bins)
    edges = np.linspace(0.0, 1.0, bins + 1)
    out = []
    for b in range(bins):
        members = which == b
        count = int(members.sum())
        out.append({
            "lower": float(edges[b]),
            "upper": float(edges[b + 1]),
            "count": count,
            "confidence": float(confidence[members].mean()) if count else None,
            "accuracy": float(correct[members].mean()) if count else None,
        })
    return out


def reliability_diagram(before_probs: np.ndarray, after_probs: np.ndarray | None, label_ids: np.ndarray,
                        path: str | Path, title: str, *, bins: int = BINS,
                        names: tuple[str, str] = ("uncalibrated (T = 1)", "calibrated")) -> Path:
    """A PNG with one panel per set of scores (``after_probs`` None: one panel): accuracy per bin
    as bars, the gap to the bin's mean score shaded, the diagonal of perfect calibration, ECE in
    the legend, and how many texts each bin holds."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display here or in CI
    import matplotlib.pyplot as plt

    panels = [(names[0], before_probs)] + ([(names[1], after_probs)] if after_probs is not None else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.8), squeeze=False)
    width = 1.0 / bins
    for ax, (name, probs) in zip(axes[0], panels):
        table = reliability(probs, label_ids, bins)
        ece = expected_calibration_error(probs, label_ids, bins)
        lower = np.array([row["lower"] for row in table])
        filled = np.array([row["count"] > 0 for row in table])
        acc = np.array([row["accuracy"] or 0.0 for row in table])
        conf = np.array([row["confidence"] or 0.0 for row in table])
        ax.bar(lower[filled], acc[filled], width=width, align="edge", color="#4c72b0",
               edgecolor="black", linewidth=0.5, label=f"accuracy (ECE {100 * ece:.1f}%)")
        ax.bar(lower[filled], (conf - acc)[filled], bottom=acc[filled], width=width, align="edge",
               color="#dd8452", alpha=0.5, edgecolor="#dd8452", hatch="//", label="gap to mean score")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfectly calibrated")
        for row in table:
            if row["count"]:
                ax.text(row["lower"] + width / 2, 0.02, str(row["count"]), ha="center", va="bottom",
                        fontsize=6, rotation=90,
                        bbox={"facecolor": "white", "alpha": 0.7, "linewidth": 0, "pad": 1})
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_xlabel("top-class score (bin)")
        ax.set_ylabel("accuracy in bin")
        ax.set_title(name, fontsize=9)
        ax.legend(loc="upper left", fontsize=7)
    fig.suptitle(f"{title}\n{len(label_ids)} texts, {bins} bins; numbers: texts per bin", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def check_label_ids(label_ids, n: int, classes: int) -> np.ndarray:
    """``label_ids`` as int64 class indices, one per text; ValueError saying what is wrong."""
    ids = np.asarray(label_ids)
    if ids.ndim != 1 or len(ids) != n:
        raise ValueError(f"need one label id per text: {n} texts, label ids of shape {ids.shape}")
    if n and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"label ids must be integers (class indices), not {ids.dtype}")
    if n and (ids.min() < 0 or ids.max() >= classes):
        raise ValueError(f"label ids must lie in [0, {classes}); got {ids.min()} .. {ids.max()}")
    return ids.astype(np.int64)


def _binned(probs, label_ids, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-class score, whether it was right, and its bin (lower, upper] of each text."""
    if not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be a positive integer, not {bins!r}")
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"probs must be a (texts, classes) array with at least 2 classes, "
                         f"not of shape {probs.shape}")
    if len(probs) == 0:
        raise ValueError("no texts: calibration figures need at least one")
    if not np.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1:
        raise ValueError("probs must be finite probabilities in [0, 1]")
    if not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError("each row of probs must sum to 1 (softmax scores, not logits)")
    ids = check_label_ids(label_ids, len(probs), probs.shape[1])
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == ids
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    return confidence, correct, which


# --- explanations -----------------------------------------------------------------------------


def plot_explanation(explanation, path: Path, model_name: str) -> Path:
    """Attention heatmap (query rows x key columns) over a strip of rollout weights, sharing the
    token axis so a column of the heatmap sits above its token's weight. ``explanation``: an
    ``engine.explain.Explanation``."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display here or in CI
    import matplotlib.pyplot as plt

    n = len(explanation.tokens)
    # ~0.28 inch per token keeps the rotated labels apart; small fonts only for long texts
    cell = 0.28
    font = 9 if n <= 40 else 7 if n <= 80 else 5
    side = max(4.0, cell * n)
    fig = plt.figure(figsize=(side + 2.6, side + 3.2))
    # spacing is a fraction of the mean axis size: keep the gaps ~0.15 inch at any length
    grid = fig.add_gridspec(2, 2, height_ratios=[side, 0.5], width_ratios=[side, 0.25],
                            hspace=0.3 / (side + 0.5), wspace=0.3 / (side + 0.25))
    heat, strip = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[1, 0])
    bar = fig.add_subplot(grid[0, 1])
    labels = [t.replace("$", r"\$") for t in explanation.tokens]  # '$' would start mathtext

    image = heat.imshow(explanation.attention, cmap="viridis", vmin=0.0, aspect="auto")
    heat.set_yticks(range(n), labels, fontsize=font)
    heat.set_xticks(range(n), [""] * n)
    heat.set_ylabel("query token (attends ...)")
    head = "mean of heads" if explanation.head is None else f"head {explanation.head}"
    heat.set_title(f"{model_name}: {explanation.label} ({explanation.score:.2f})\n"
                   f"attention, layer {explanation.layer}, {head}", fontsize=10)
    fig.colorbar(image, cax=bar, label="attention probability")

    weights = np.asarray(explanation.weights)[None, :]
    strip.imshow(weights, cmap="Oranges", vmin=0.0, aspect="auto")
    strip.set_xticks(range(n), labels, rotation=90, fontsize=font)
    strip.set_yticks([0], ["rollout"], fontsize=font)
    strip.set_xlabel("key token (... to); bottom row: attention-rollout weight (special tokens 0)")
    if n <= 40:
        dark = 0.6 * float(weights.max())
        for i, w in enumerate(explanation.weights):
            if not explanation.special[i]:
                strip.text(i, 0, f"{w:.2f}".lstrip("0"), ha="center", va="center", fontsize=6,
                           color="white" if w > dark else "black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
