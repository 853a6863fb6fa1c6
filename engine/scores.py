"""Logits to scores, written once for every stage that reads a model: the engine, `explain`, the
PyTorch reference of train/ and export/, and the calibration fit.

numpy only (array-likes in, so train/ can pass what torch gives it through ``.numpy()``): the
serving path imports this module and must never load torch.
"""

from __future__ import annotations

import numpy as np


def softmax(logits, temperature=1.0) -> np.ndarray:
    """softmax(logits / temperature) over the last axis of (texts, labels) logits, in float64;
    ``temperature`` one number, or one per text (the engine's per-reading temperatures)."""
    temperature = np.asarray(temperature, dtype=np.float64)
    z = np.asarray(logits, dtype=np.float64)
    z = z / (temperature[:, None] if temperature.ndim == 1 else temperature)
    z = z - z.max(axis=-1, keepdims=True)  # exp never overflows; the result is unchanged
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def average_windows(window_logits, owners, texts: int) -> np.ndarray:
    """(texts, labels): each text's logits as the mean over the windows it was read through.

    ``owners[i]`` is the text that row ``i`` of ``window_logits`` belongs to. Every stage must pool
    windows this one way, or the export's parity check and the calibration would measure another
    model than the one served. Float32 logits stay float32 (what ONNX Runtime gives)."""
    window_logits = np.asarray(window_logits)
    owners = np.asarray(owners, dtype=np.intp)
    if window_logits.ndim != 2 or owners.shape != (len(window_logits),):
        raise ValueError(f"need one owner per row of (windows, labels) logits: logits of shape "
                         f"{window_logits.shape}, owners of shape {owners.shape}")
    counts = np.bincount(owners, minlength=texts) if len(owners) else np.zeros(texts, np.intp)
    if len(counts) != texts or (counts == 0).any():
        raise ValueError(f"every one of the {texts} texts needs at least one window, and no window "
                         f"may name another text; windows per text: {counts.tolist()}")
    dtype = np.result_type(window_logits.dtype, np.float32)
    if len(owners) == texts:  # every text read in one window: the common case, no work to do
        pooled = np.empty((texts, window_logits.shape[1]), dtype=dtype)
        pooled[owners] = window_logits
        return pooled
    pooled = np.zeros((texts, window_logits.shape[1]), dtype=dtype)
    np.add.at(pooled, owners, window_logits)
    pooled /= counts[:, None].astype(dtype)
    return pooled
