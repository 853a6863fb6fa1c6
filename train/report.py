"""Evaluation reports: accuracy, macro-F1, per-class precision/recall, a confusion-matrix PNG.

One writer serves training (held-out file), export (per variant) and `textcls evaluate`.
Torch-free.
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
    """report.json, report.md and confusion_matrix.png in out_dir; returns out_dir. ``figures``:
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
    lines += ["", "```", evaluation.report_text.rstrip(), "```", "", "![confusion matrix](confusion_matrix.png)", ""]
    lines += [line for caption, file in (figures or {}).items() for line in (f"![{caption}]({file})", "")]
    (out / "report.md").write_text("\n".join(lines))
    plot_confusion(evaluation, out / "confusion_matrix.png", title)
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
