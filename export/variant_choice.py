"""Which CPU variant a bundle serves: a fixed preference, overridden only by a clear measurement.

One throughput reading per variant decided it before, and it flipped with the machine's load: the
demo topic bundle was stored serving fp32 (int8 162 seq/s, fp32 298) with pip running beside the
export, and int8 (385 against 217) rebuilt on a quiet machine (issue 22). So:

- the preference is int8, then the ORT-optimized fp32 graph, then fp32: int8 is the fastest on the
  CPUs measured here (docs/benchmarks.md) and the smallest; the optimized graph fuses what fp32
  computes op by op;
- the passed candidates are timed in ``rounds`` interleaved rounds (every round times each once,
  the order reversed every other round), so a burst of load lands on all of them alike, and each
  is summarised by its median, which one disturbed round cannot move;
- another passed variant replaces the preferred one only when its median is at least ``margin``
  times the preferred one's: a difference that large is the machine's, not the moment's.

The timing is a function passed in (``time_once``), so the rule is tested without a model.
"""

from __future__ import annotations

import statistics
from typing import Callable

from engine.bundle import CpuChoice

PREFERENCE = ("int8", "optimized", "fp32")
ROUNDS = 5
MARGIN = 1.5


def time_interleaved(candidates: list[str], time_once: Callable[[str], float],
                     rounds: int = ROUNDS) -> dict[str, list[float]]:
    """seq/s of every candidate in every round, by ``time_once(name)``; round r times them in the
    candidates' order when r is even and in reverse when odd, so no variant always runs first
    (after an idle pause) or last (after the others warmed the caches)."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, not {rounds}")
    readings: dict[str, list[float]] = {name: [] for name in candidates}
    for r in range(rounds):
        for name in candidates if r % 2 == 0 else reversed(candidates):
            readings[name].append(float(time_once(name)))
    return readings


def choose_cpu_variant(passed: list[str], readings: dict[str, list[float]], *,
                       preference: tuple[str, ...] = PREFERENCE, margin: float = MARGIN) -> CpuChoice:
    """The CPU variant to serve among ``passed``, with the figures and the reason for the manifest.

    ``readings``: seq/s per round of each passed candidate (``time_interleaved``); a candidate
    without readings can be preferred but never wins on speed."""
    candidates = [v for v in preference if v in passed]
    medians = {v: round(statistics.median(readings[v]), 1) for v in candidates if readings.get(v)}
    figures = dict(preference=list(preference), margin=margin,
                   rounds=max((len(readings.get(v, [])) for v in candidates), default=0),
                   seq_per_s={v: [round(x, 1) for x in readings[v]] for v in candidates if readings.get(v)},
                   median_seq_per_s=medians)
    if not candidates:
        return CpuChoice(variant=None, reason=f"no CPU variant ({', '.join(preference)}) passed", **figures)
    preferred = candidates[0]
    if len(candidates) == 1:
        return CpuChoice(variant=preferred, reason=f"{preferred}: the only CPU variant that passed", **figures)
    rivals = [v for v in candidates[1:] if v in medians]
    if preferred not in medians or not rivals:
        return CpuChoice(variant=preferred, reason=f"preferred {preferred} (no timings to compare)", **figures)
    fastest = max(rivals, key=lambda v: medians[v])
    ratio = medians[fastest] / medians[preferred] if medians[preferred] > 0 else float("inf")
    figures_text = (f"median {medians[fastest]:g} against {medians[preferred]:g} seq/s over "
                    f"{figures['rounds']} interleaved rounds")
    if ratio >= margin:
        return CpuChoice(variant=fastest, reason=f"{fastest} over the preferred {preferred}: "
                         f"{ratio:.2f}× faster ({figures_text}), at least the {margin:g}× margin", **figures)
    return CpuChoice(variant=preferred, reason=f"preferred {preferred}; {fastest}, the fastest other, is "
                     f"not {margin:g}× faster ({ratio:.2f}×: {figures_text})", **figures)
