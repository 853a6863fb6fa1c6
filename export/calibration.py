"""Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks").

A fine-tuned classifier's softmax is usually over-confident: of the texts it scores 0.95, far fewer
than 95% are right. Dividing the logits by one temperature T > 1 (fitted by minimising the
negative log-likelihood on labelled held-out texts) softens every score without changing any
label, since argmax(z / T) = argmax(z). The export fits T on ``--eval-data`` for the served CPU
variant and records it in the manifest; the engine applies it (engine/engine.py).

The figure of merit is the expected calibration error (ECE): texts binned by their top-class
score into equal-width bins, ECE = sum over bins of (texts in bin / n) * |accuracy - mean score|,
a fraction (0.05: scores are 5 points off on average). On a dev file of a thousand texts the
estimate is noisy and biased upwards: even a perfectly calibrated model shows an ECE of about 2%
on SST-2 dev (872 texts). ``ece_floor`` measures that floor for the scores at hand, so a figure
can be read against it.

Texts over the model's max_length read through several windows (engine/long_texts.py, chunk) get
the mean of their windows' logits, which is a differently scaled statistic: on IMDB dev the
pooled texts want T = 0.9 where single windows want 1.1 to 1.8. ``calibrate_by_reading`` fits one
temperature per reading (one window, several windows) when there are enough of each.

numpy, scipy and matplotlib only: no torch.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from engine.scores import softmax  # the engine's own: the fit scores texts as they are served

log = logging.getLogger(__name__)

BINS = 15  # Guo et al.'s choice
# The range of T searched. At a bound the fit is degenerate (e.g. a model that gets every
# calibration text right wants T -> 0); the result says so rather than pretending.
T_MIN, T_MAX = 0.05, 20.0
# texts read through several windows needed to fit their own temperature; fewer share the
# one-window temperature (one temperature per reading: a noisy fit on a few texts would do harm)
MIN_POOLED = 100


@dataclass(frozen=True)
class CalibrationResult:
    temperature: float
    ece_before: float  # with T = 1, on the texts the fit saw
    ece_after: float  # with the fitted T, on the same texts (in-sample)
    nll_before: float
    nll_after: float
    n: int
    bins: int
    at_bound: bool  # T hit T_MIN or T_MAX: the optimum lies outside the searched range

    def to_dict(self) -> dict:
        return asdict(self)


def nll(logits: np.ndarray, label_ids: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true labels under softmax(logits / temperature).

    Per text: log(1 + sum over the other classes of exp(z_j - z_true)), by log1p when the true
    class leads, so that a confident right text keeps a tiny positive loss instead of rounding to
    0 (the fit at small T would otherwise search a flat objective)."""
    logits, label_ids = _check_logits(logits, label_ids)
    rows = np.arange(len(logits))
    d = logits / temperature
    d = d - d[rows, label_ids][:, None]  # the true class at 0
    d[rows, label_ids] = -np.inf
    top = np.maximum(d.max(axis=1), 0.0)
    with np.errstate(divide="ignore"):
        others = np.exp(d - top[:, None]).sum(axis=1)
        losses = np.where(top > 0, top + np.log(np.exp(-top) + others), np.log1p(others))
    return float(np.mean(losses))


def fit_temperature(logits: np.ndarray, label_ids: np.ndarray) -> float:
    """The T in [T_MIN, T_MAX] that minimises the mean NLL of softmax(logits / T).

    Searched over log T (bounded Brent): the NLL is far more even in log T than in T, and T stays
    positive."""
    from scipy.optimize import minimize_scalar

    logits, label_ids = _check_logits(logits, label_ids)
    result = minimize_scalar(lambda log_t: nll(logits, label_ids, float(np.exp(log_t))),
                             bounds=(np.log(T_MIN), np.log(T_MAX)), method="bounded",
                             options={"xatol": 1e-6})
    if not result.success:  # not seen; a bounded scalar search has nothing to diverge on
        raise ValueError(f"the temperature fit did not converge: {result.message}")
    # Brent's search never evaluates the ends themselves: when the NLL falls all the way to one
    # (or is flat there), the end is the answer
    candidates = [float(np.exp(result.x)), T_MIN, T_MAX]
    return min(candidates, key=lambda t: nll(logits, label_ids, t))


def calibrate(logits: np.ndarray, label_ids: np.ndarray, bins: int = BINS) -> CalibrationResult:
    """Fit T and measure ECE and NLL before (T = 1) and after, on the same texts."""
    logits, label_ids = _check_logits(logits, label_ids)
    t = fit_temperature(logits, label_ids)
    at_bound = bool(np.isclose(np.log(t), np.log(T_MIN), atol=1e-3)
                    or np.isclose(np.log(t), np.log(T_MAX), atol=1e-3))
    if at_bound:
        log.warning("the fitted temperature %.3g is at the bound of [%g, %g]: the NLL keeps falling "
                    "outside it (e.g. every calibration text is right); the fit is degenerate",
                    t, T_MIN, T_MAX)
    return CalibrationResult(
        temperature=t,
        ece_before=expected_calibration_error(softmax(logits), label_ids, bins),
        ece_after=expected_calibration_error(softmax(logits, t), label_ids, bins),
        nll_before=nll(logits, label_ids),
        nll_after=nll(logits, label_ids, t),
        n=len(label_ids),
        bins=bins,
        at_bound=at_bound,
    )


@dataclass(frozen=True)
class ReadingCalibration:
    """The temperatures of the two readings: ``one`` for texts read in one window (every text of
    max_length tokens or fewer, and truncate / head_tail), ``pooled`` for texts read through
    several windows (chunk). ``pooled`` None: one temperature, ``one``, fitted on every text,
    serves both (too few texts of one reading to fit it apart)."""

    one: CalibrationResult
    pooled: CalibrationResult | None

    @property
    def temperature(self) -> float:
        return self.one.temperature

    @property
    def window_temperature(self) -> float:
        return self.pooled.temperature if self.pooled is not None else self.one.temperature


def calibrate_by_reading(logits: np.ndarray, label_ids: np.ndarray, windows, bins: int = BINS,
                         min_pooled: int = MIN_POOLED) -> ReadingCalibration:
    """``calibrate`` on the one-window texts and on the texts read through several windows
    separately, when there are at least ``min_pooled`` of the latter and 2 of the former; else
    one temperature on every text."""
    logits, label_ids = _check_logits(logits, label_ids)
    windows = np.asarray(windows)
    if windows.shape != (len(logits),) or (windows < 1).any():
        raise ValueError(f"need a window count of at least 1 per text: {len(logits)} texts, "
                         f"windows of shape {windows.shape}")
    pooled = windows > 1
    if pooled.sum() >= min_pooled and (~pooled).sum() >= 2:
        return ReadingCalibration(calibrate(logits[~pooled], label_ids[~pooled], bins),
                                  calibrate(logits[pooled], label_ids[pooled], bins))
    return ReadingCalibration(calibrate(logits, label_ids, bins), None)


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


def expected_calibration_error(probs: np.ndarray, label_ids: np.ndarray, bins: int = BINS) -> float:
    """ECE as a fraction in [0, 1]: sum over bins of (count / n) * |accuracy - confidence|."""
    confidence, correct, which = _binned(probs, label_ids, bins)
    n = len(confidence)
    conf_sum = np.bincount(which, weights=confidence, minlength=bins)
    right_sum = np.bincount(which, weights=correct.astype(np.float64), minlength=bins)
    return float(np.abs(right_sum - conf_sum).sum() / n) if n else 0.0


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


# --- input checks -----------------------------------------------------------------------------

def _check_logits(logits, label_ids) -> tuple[np.ndarray, np.ndarray]:
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must be a (texts, classes) array with at least 2 classes, "
                         f"not of shape {logits.shape}")
    if len(logits) < 2:
        raise ValueError(f"a temperature needs at least 2 labelled texts to fit on; got {len(logits)}")
    if not np.isfinite(logits).all():
        bad = int((~np.isfinite(logits)).any(axis=1).sum())
        raise ValueError(f"{bad} of {len(logits)} texts have non-finite (NaN or inf) logits; "
                         "the model's outputs cannot be calibrated")
    return logits, _check_label_ids(label_ids, len(logits), logits.shape[1])


def _check_label_ids(label_ids, n: int, classes: int) -> np.ndarray:
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
    ids = _check_label_ids(label_ids, len(probs), probs.shape[1])
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == ids
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    return confidence, correct, which
