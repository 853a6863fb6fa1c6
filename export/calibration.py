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

import numpy as np

from engine.scores import softmax  # the engine's own: the fit scores texts as they are served
# ECE and the reliability diagram are the report's (evaluate draws them too); re-exported here for
# the export, which fits and reports in one place
from train.report import (BINS, check_label_ids as _check_label_ids, ece_floor,  # noqa: F401
                          expected_calibration_error, reliability, reliability_diagram)

log = logging.getLogger(__name__)

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


