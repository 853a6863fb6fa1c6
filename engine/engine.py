"""The inference engine: texts in, predictions out. Knows nothing of HTTP.

preprocess (tokenize, cut texts longer than the model's max_length by the bundle's long-text rule,
sort by length, cut into sub-batches under a token budget) -> predict (ONNX Runtime; the logits of a
text read as several windows are averaged) -> postprocess (the bundle's temperature, softmax, map
logits to labels). Padding waste is the biggest cost on
CPU, so texts are sorted by token count and each ONNX Runtime call takes as many of them as fit
in ``batch_tokens`` padded tokens (text-embeddings-inference's ``max-batch-tokens``): many short
texts per call, few long ones, never more padding than the longest text of a call needs. Answers
come back in the callers' order.

Only tokenizers, numpy and onnxruntime are imported: the serving path never loads torch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from engine.long_texts import LongTextRule
from core.system import DEFAULT_BATCH_TOKENS, available_cores
from engine.bundle import TOKENIZER, Bundle, BundleError
from engine.scores import average_windows, softmax

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


@dataclass
class Prediction:
    label: str
    score: float
    scores: dict[str, float]

    def to_dict(self) -> dict:
        return {"label": self.label, "score": self.score, "scores": self.scores}


@dataclass
class BatchResult:
    predictions: list[Prediction]
    tokenize_seconds: float = 0.0
    inference_seconds: float = 0.0
    tokens: int = 0  # real tokens, special tokens included, padding excluded
    padded_tokens: int = 0  # what the model was fed, padding included
    truncated: list[bool] = field(default_factory=list)  # some of the text's tokens were not read
    windows: list[int] = field(default_factory=list)  # model inputs per text (chunk: up to max_windows)
    logits: np.ndarray | None = None  # one row per text (windows averaged), before the temperature

    def long_text_windows(self) -> list[int]:
        """The model inputs of each text over max_length tokens, one entry per such text (a text
        over it is read as several windows, or loses tokens, or both)."""
        return [n for n, cut in zip(self.windows, self.truncated) if n > 1 or cut]


def token_batches(sorted_lengths: np.ndarray, budget: int) -> list[slice]:
    """Cut texts sorted by ascending token count into runs whose padded size (texts in the run x
    its last, longest text) stays within ``budget``; a text longer than the budget runs alone."""
    batches, start, n = [], 0, len(sorted_lengths)
    while start < n:
        end = start + 1
        while end < n and (end + 1 - start) * int(sorted_lengths[end]) <= budget:
            end += 1
        batches.append(slice(start, end))
        start = end
    return batches


def choose_provider(device: str = "auto") -> str:
    """CUDA when asked or when onnxruntime-gpu sees a GPU, else CPU."""
    available = ort.get_available_providers()
    if device == "cuda":
        if CUDA not in available:
            raise BundleError(
                "device=cuda was asked for, but onnxruntime offers no CUDAExecutionProvider "
                f"(it has {available}); install onnxruntime-gpu on a machine with a GPU."
            )
        return CUDA
    if device == "cpu":
        return CPU
    if device != "auto":
        raise BundleError(f"device must be auto, cpu or cuda, not {device!r}.")
    return CUDA if CUDA in available else CPU


def reading_temperatures(windows, temperature: float, window_temperature: float) -> np.ndarray:
    """Per text: ``window_temperature`` for a text read through several windows (its logits are
    their mean, a differently scaled statistic), else ``temperature``."""
    return np.where(np.asarray(windows) > 1, window_temperature, temperature).astype(np.float64)


class Engine:
    def __init__(
        self,
        bundle: Bundle,
        *,
        variant: str | None = None,
        device: str = "auto",
        threads: int | None = None,
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        allow_failed: bool = False,
        long_texts: LongTextRule | None = None,
        calibrated: bool = True,
    ) -> None:
        """``variant`` None: the bundle's GPU variant on CUDA (its CPU variant when it has none),
        else its CPU variant. A variant the export marked failed is refused unless
        ``allow_failed`` (the export's own checks, or `textcls evaluate --variant` on purpose).
        ``long_texts`` None: the rule the bundle's manifest records. ``calibrated``: scores are
        softmax(logits / the manifest's temperature); False: softmax(logits)."""
        if batch_tokens < 1:
            raise ValueError("batch_tokens must be at least 1")
        self.bundle = bundle
        self.provider = choose_provider(device)
        if variant is None:
            variant = bundle.gpu_variant if self.provider == CUDA else None
            variant = variant or bundle.cpu_variant
            if variant is None:
                raise BundleError(
                    f"bundle {bundle.path} has no CPU variant that passed the export's checks "
                    f"(verdicts: { {v: bundle.verdict(v) for v in bundle.manifest.variants} }); re-export it."
                )
        if not allow_failed and bundle.verdict(variant) == "failed":
            failure = bundle.manifest.variants[variant].failure or "see its manifest"
            raise BundleError(
                f"variant {variant!r} of bundle {bundle.path} failed the export's checks "
                f"({failure}); it is never served."
            )
        if variant not in bundle.manifest.variants:
            bundle.variant_path(variant)  # raises, naming the variants the bundle has
        # the files the export checked, byte for byte, or none at all
        if not bundle.verify([bundle.manifest.variants[variant].file, TOKENIZER]):
            log.warning("bundle %s records no file hashes (exported before they were added): "
                        "its files cannot be checked against the export; re-export it", bundle.path)
        self.variant = variant
        self.batch_tokens = batch_tokens
        self.threads = threads or available_cores()

        self.long_texts = long_texts or bundle.long_texts
        # one temperature per reading: texts read in one window, texts pooled from several
        self.temperature = bundle.temperature if calibrated else 1.0
        self.window_temperature = bundle.window_temperature if calibrated else 1.0

        # no truncation here: the long-text rule decides what the model reads
        self.tokenizer = Tokenizer.from_file(str(bundle.path / TOKENIZER))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = [self.provider] if self.provider == CPU else [self.provider, CPU]
        self.session = ort.InferenceSession(
            str(bundle.variant_path(variant)), sess_options=options, providers=providers
        )
        # What ORT actually runs on: it falls back to CPU silently when CUDA fails to load.
        self.provider = self.session.get_providers()[0]
        self.input_names = [i.name for i in self.session.get_inputs()]
        log.info(
            "engine for %s: variant=%s provider=%s threads=%d version=%s long_texts=%s "
            "temperature=%.3f (windows: %.3f)", self.task, self.variant, self.provider, self.threads,
            self.version, self.long_texts.rule, self.temperature, self.window_temperature,
        )

    @property
    def task(self) -> str:
        return self.bundle.task

    @property
    def labels(self) -> list[str]:
        return self.bundle.labels

    @property
    def version(self) -> str:
        return self.bundle.version

    def run(self, texts: list[str]) -> BatchResult:
        if not texts:
            return BatchResult(predictions=[], logits=np.zeros((0, len(self.labels)), np.float32))
        t0 = time.perf_counter()
        encodings = self.tokenizer.encode_batch(list(texts))
        rows, owners, truncated, windows = self.read(encodings)
        tokenize_seconds = time.perf_counter() - t0

        lengths = np.array([len(r) for r in rows])
        order = np.argsort(lengths, kind="stable")
        row_logits = np.empty((len(rows), len(self.labels)), dtype=np.float32)
        padded = 0
        t1 = time.perf_counter()
        for run in token_batches(lengths[order], self.batch_tokens):
            idx = order[run]
            feed = self.feed([rows[i] for i in idx], int(lengths[idx].max()))
            padded += feed["input_ids"].size
            row_logits[idx] = self.session.run(None, feed)[0]
        inference_seconds = time.perf_counter() - t1
        logits = average_windows(row_logits, owners, len(texts))

        return BatchResult(
            predictions=self.postprocess(logits, windows),
            tokenize_seconds=tokenize_seconds,
            inference_seconds=inference_seconds,
            tokens=int(lengths.sum()),
            padded_tokens=padded,
            truncated=truncated,
            windows=windows,
            logits=logits,
        )

    def read(self, encodings) -> tuple[list[list[int]], np.ndarray, list[bool], list[int]]:
        """The model inputs of tokenized texts by the long-text rule: the token ids of every
        window, the text each belongs to, whether a text lost tokens, windows per text."""
        rows: list[list[int]] = []
        owners: list[int] = []
        truncated: list[bool] = []
        windows: list[int] = []
        max_length = self.bundle.max_length
        for i, enc in enumerate(encodings):
            ids = enc.ids
            if len(ids) <= max_length:  # what windows() gives such a text, without the positions
                parts, cut = [ids], False
            else:
                positions, cut = self.long_texts.windows(enc.special_tokens_mask, max_length)
                parts = [[ids[p] for p in window] for window in positions]
            rows.extend(parts)
            owners.extend([i] * len(parts))
            truncated.append(cut)
            windows.append(len(parts))
        return rows, np.asarray(owners), truncated, windows

    def predict(self, texts: list[str]) -> list[Prediction]:
        return self.run(texts).predictions

    def logits(self, texts: list[str]) -> np.ndarray:
        return self.run(texts).logits

    def warmup(self) -> None:
        """Calls of the largest shapes we serve, so the first caller does not pay for them."""
        longest = max(1, self.batch_tokens // self.bundle.max_length)
        self.run(["warm-up " * self.bundle.max_length] * longest + ["ok"] * 8)

    def feed(self, rows: list[list[int]], width: int) -> dict[str, np.ndarray]:
        """Token-id rows padded to ``width``, as the graph's inputs."""
        n = len(rows)
        ids = np.full((n, width), self.bundle.pad_token_id, dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        for row, tokens in enumerate(rows):
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.input_names:
            feed["token_type_ids"] = np.zeros_like(ids)
        return feed

    def temperatures(self, windows: list[int] | np.ndarray) -> np.ndarray:
        """Per text, the temperature its logits are divided by: the window temperature for a
        text read through several windows, else the one-window temperature."""
        return reading_temperatures(windows, self.temperature, self.window_temperature)

    def postprocess(self, logits: np.ndarray, windows: list[int] | None = None) -> list[Prediction]:
        """Predictions from logits (one row per text); ``windows`` None: every text one window."""
        temperatures = self.temperatures(windows if windows is not None else np.ones(len(logits)))
        probs = softmax(logits, temperatures)
        labels = self.labels
        out = []
        for row in probs:
            best = int(row.argmax())
            out.append(
                Prediction(
                    label=labels[best],
                    score=float(row[best]),
                    scores={label: float(p) for label, p in zip(labels, row)},
                )
            )
        return out
