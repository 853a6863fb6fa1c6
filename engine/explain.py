"""Explanations: which tokens the model looked at, computed by the bundle's ``explain`` variant.

The ``explain`` variant (`export/explain_export.py`) is the fp32 graph with a second output, the
attention probabilities of every layer, shape (batch, layers, heads, sequence, sequence). From them:
- the attention matrix of one layer and head (or the mean of the heads), for a heatmap;
- per-token attribution weights by attention rollout (Abnar & Zuidema 2020, "Quantifying
  Attention Flow in Transformers"): average the heads, add the identity for the residual
  connection, re-normalise the rows, multiply through the layers, and read the row of the first
  position, where BERT's [CLS] and RoBERTa's <s> feed the classifier. Special tokens get weight 0
  and the rest is normalised to sum to 1.

The prediction comes from the same forward pass, through the engine's tokenizer, long-text rule,
feed and postprocess, so an explanation's label is the one this graph gives for the text. A text
the rule reads as several windows (``chunk``) is explained window by window: the logits are
averaged as the engine averages them, a token read in two overlapping windows gets the mean of its
weights, and the attention matrix covers every token read (zero between tokens no window holds
together; rows re-normalised).

Only tokenizers, numpy and onnxruntime are imported: the serving path never loads torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from engine.long_texts import LongTextRule
from engine.bundle import EXPLAIN, Bundle, BundleError
from engine.engine import Engine
from engine.scores import average_windows

METHOD = "attention-rollout"
ATTENTIONS = "attentions"


class ExplainError(ValueError):
    """A request the explainer cannot answer (empty text, a layer or head the model lacks);
    the message says what is allowed."""


class TokenWeight(NamedTuple):
    index: int  # position in Explanation.tokens
    token: str
    weight: float


@dataclass
class Explanation:
    text: str
    tokens: list[str]  # the text's span for each token; special tokens as the tokenizer spells them
    special: list[bool]  # [CLS], [SEP], <s>, </s>, ...: weight 0, shown but never "top"
    offsets: list[tuple[int, int]]  # character span of each token in `text`; (0, 0) for special ones
    label: str
    score: float
    scores: dict[str, float]
    layer: int  # 0-based, negative indices resolved
    head: int | None  # None: the mean of the layer's heads
    attention: np.ndarray  # (tokens, tokens): row = query token, column = key token; rows sum to 1
    weights: np.ndarray  # (tokens,): attention rollout from the first position
    truncated: bool  # the long-text rule left tokens unread; `tokens` are the ones the model read
    method: str = METHOD

    def top_tokens(self, k: int = 5) -> list[TokenWeight]:
        """The k non-special tokens with the largest weights, largest first (ties: earlier first)."""
        if k < 1:
            raise ExplainError(f"k must be at least 1, not {k}.")
        order = sorted((i for i, s in enumerate(self.special) if not s),
                       key=lambda i: (-self.weights[i], i))
        return [TokenWeight(i, self.tokens[i], float(self.weights[i])) for i in order[:k]]

    def to_dict(self) -> dict:
        """JSON-ready: plain lists and floats."""
        return {"tokens": list(self.tokens), "label": self.label, "score": float(self.score),
                "weights": [float(w) for w in self.weights], "method": self.method,
                "truncated": self.truncated}


def attention_rollout(attentions: np.ndarray) -> np.ndarray:
    """(layers, heads, seq, seq) attention probabilities -> (seq, seq) rollout, rows summing to 1.

    Row i says how much of position i's final representation flows from each input position,
    counting the residual path as attention to itself (the added identity).
    """
    if attentions.ndim != 4 or attentions.shape[-1] != attentions.shape[-2]:
        raise ValueError(f"expected (layers, heads, seq, seq) attentions, got {attentions.shape}")
    seq = attentions.shape[-1]
    # float64: products of dozens of stochastic matrices lose little, but nothing is saved by float32
    identity = np.eye(seq)
    rollout = identity
    for layer in attentions.astype(np.float64):
        mixed = layer.mean(axis=0) + identity
        mixed /= mixed.sum(axis=-1, keepdims=True)
        rollout = mixed @ rollout  # later layers read the output of earlier ones
    return rollout


class Explainer:
    """Explanations for one bundle, from its ``explain`` variant."""

    def __init__(self, bundle: Bundle, *, device: str = "auto", threads: int | None = None,
                 long_texts: LongTextRule | None = None) -> None:
        """``long_texts`` None: the rule the bundle records (the service passes its engine's, so
        /explain reads a long text as the served predictions do, TEXTCLS_LONG_TEXTS included)."""
        if EXPLAIN not in bundle.manifest.variants:
            raise BundleError(
                f"bundle {bundle.path} ({bundle.task}) has no {EXPLAIN!r} variant, only "
                f"{sorted(bundle.manifest.variants)}; re-export with textcls export <checkpoint> --task "
                f"{bundle.task} --variants fp32,int8,optimized,fp16,explain."
            )
        if bundle.verdict(EXPLAIN) == "failed":
            raise BundleError(
                f"the {EXPLAIN!r} variant of bundle {bundle.path} ({bundle.task}) failed the "
                f"export's checks ({bundle.manifest.variants[EXPLAIN].failure or 'see its manifest'}); "
                "explanations from it would not be those of the served model."
            )
        self.bundle = bundle
        # The engine over the explain graph: the same tokenizer, truncation, feed and
        # postprocess as served predictions, so the two cannot drift apart.
        self.engine = Engine(bundle, variant=EXPLAIN, device=device, threads=threads, long_texts=long_texts)
        outputs = [o.name for o in self.engine.session.get_outputs()]
        if outputs[:2] != ["logits", ATTENTIONS]:
            raise BundleError(f"the {EXPLAIN} variant of {bundle.path} has outputs {outputs}, not "
                              f"['logits', {ATTENTIONS!r}]; re-export the bundle.")
        # The graph leaves the heads axis symbolic (it comes out of a reshape), so the model is
        # asked once; this also warms the session up.
        shape = self._run(self.engine.tokenizer.encode("warm-up").ids)[1].shape
        if len(shape) != 5:
            raise BundleError(f"the {EXPLAIN} variant of {bundle.path} gives {ATTENTIONS} of shape "
                              f"{shape}, not (batch, layers, heads, sequence, sequence); re-export it.")
        self.layers, self.heads = int(shape[1]), int(shape[2])

    @property
    def task(self) -> str:
        return self.bundle.task

    @property
    def labels(self) -> list[str]:
        return self.bundle.labels

    def explain(self, text: str, layer: int = -1, head: int | None = None) -> Explanation:
        if not isinstance(text, str) or not text.strip():
            raise ExplainError("the text is empty; give a text to explain.")
        layer_index = self._index(layer, self.layers, "layer")
        head_index = None if head is None else self._index(head, self.heads, "head")

        encoding = self.engine.tokenizer.encode(text)
        if all(encoding.special_tokens_mask):
            raise ExplainError("the text has no tokens once normalised (only special tokens remain).")
        # what the served model reads of the text, by the bundle's long-text rule: one window, or
        # for `chunk` several, whose logits are averaged as the engine does
        windows, truncated = self.engine.long_texts.windows(encoding.special_tokens_mask,
                                                            self.bundle.max_length)
        kept = sorted({p for window in windows for p in window})  # positions read, in text order
        column = {p: k for k, p in enumerate(kept)}
        matrix = np.zeros((len(kept), len(kept)), dtype=np.float64)
        pairs = np.zeros_like(matrix)
        weights = np.zeros(len(kept), dtype=np.float64)
        reads = np.zeros_like(weights)
        window_logits = []
        special = np.array([bool(encoding.special_tokens_mask[p]) for p in kept])
        for window in windows:
            logits, attentions = self._run([encoding.ids[p] for p in window])
            window_logits.append(logits)
            attentions = attentions[0]  # (layers, heads, seq, seq)
            chosen = attentions[layer_index]
            idx = np.array([column[p] for p in window])
            matrix[np.ix_(idx, idx)] += chosen.mean(axis=0) if head_index is None else chosen[head_index]
            pairs[np.ix_(idx, idx)] += 1
            rollout = attention_rollout(attentions)[0]
            rollout[special[idx]] = 0.0
            weights[idx] += rollout / rollout.sum()
            reads[idx] += 1
        pooled = average_windows(np.concatenate(window_logits), np.zeros(len(windows), np.intp), 1)
        prediction = self.engine.postprocess(pooled, [len(windows)])[0]
        matrix = np.divide(matrix, pairs, out=np.zeros_like(matrix), where=pairs > 0)
        matrix /= matrix.sum(axis=1, keepdims=True)  # rows sum to 1 across windows too
        weights /= reads
        weights /= weights.sum()

        offsets = [tuple(encoding.offsets[p]) for p in kept]
        tokens = [encoding.tokens[p] if s else text[a:b] for p, s, (a, b) in zip(kept, special, offsets)]
        return Explanation(
            text=text, tokens=tokens, special=special.tolist(), offsets=offsets,
            label=prediction.label, score=prediction.score, scores=prediction.scores,
            layer=layer_index, head=head_index, attention=matrix.astype(np.float32),
            weights=weights.astype(np.float32), truncated=truncated,
        )

    def _run(self, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        feed = self.engine.feed([ids], len(ids))
        logits, attentions = self.engine.session.run(["logits", ATTENTIONS], feed)
        return logits, attentions

    @staticmethod
    def _index(value: int, size: int, name: str) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not -size <= value < size:
            raise ExplainError(
                f"{name} {value!r} does not exist: the model has {size} {name}s "
                f"(0 to {size - 1}, or -1 for the last)."
            )
        return int(value) % size
