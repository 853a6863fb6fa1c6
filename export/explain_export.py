"""The ``explain`` bundle variant: an fp32 graph whose outputs are the logits and the attention
probabilities of every layer, for `engine/explain.py` (attention heatmaps, attention rollout).

Outputs:
- ``logits``: (batch, labels), first, so the serving engine (which reads output 0) can check this
  graph against PyTorch exactly like the other variants.
- ``attentions``: (batch, layers, heads, sequence, sequence), softmax rows over the keys; padded
  keys get ~0.

Optimum's exporter gives no attention outputs, so this wraps the checkpoint in a small module and
exports it with ``torch.onnx.export``. Imports torch: an export-time module, never imported by
the serving path.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from core.errors import BoundError, UserError

OUTPUT_NAMES = ("logits", "attentions")
OPSET = 17
# Attention probabilities lie in [0, 1]; a correct export differs from PyTorch by float noise
# (measured ~3e-6 on all-MiniLM-L6); anything near this bound means the graph computes something
# else (a mask baked in at trace time, dropout left on).
MAX_ATTENTION_DIFF = 1e-4
CHECK_TEXTS = 8


def build_explain_variant(checkpoint: Path, target: Path, *, input_names: list[str],
                          texts: list[str], max_length: int) -> dict:
    """Export ``checkpoint`` to ``target`` and check its attentions against PyTorch on ``texts``.

    ``input_names`` are the served fp32 graph's inputs, so the engine feeds both graphs the same
    way (Optimum drops ``token_type_ids`` for RoBERTa, keeps it for BERT). Returns the figures of
    the attention check for the manifest, with a ``failure`` message when they miss the bound
    (the export then marks the variant failed); raises BoundError when the graph is not the
    expected one at all (other outputs, other shapes).
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    unknown = sorted(set(input_names) - {"input_ids", "attention_mask", "token_type_ids"})
    if unknown or input_names[:2] != ["input_ids", "attention_mask"]:
        raise UserError(f"the fp32 graph has inputs {input_names}; the explain variant knows "
                        "input_ids, attention_mask and token_type_ids only.")
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    # eager: the SDPA kernels never materialise the attention probabilities
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, attn_implementation="eager")
    wrapper = _WithAttentions(model).eval()

    # A padded batch of unequal texts, so a mask or length that the tracer might freeze is visible
    # in the check below rather than in production.
    example = _encode(tokenizer, texts[:CHECK_TEXTS], input_names, max_length)
    axes = {name: {0: "batch", 1: "sequence"} for name in input_names}
    axes["logits"] = {0: "batch"}
    axes["attentions"] = {0: "batch", 3: "sequence", 4: "sequence"}
    with torch.no_grad(), warnings.catch_warnings():
        # The legacy TorchScript exporter is chosen on purpose: the dynamo exporter needs
        # onnxscript, which is not a dependency; its deprecation notice is not actionable here.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            wrapper, tuple(example[n] for n in input_names), str(target), dynamo=False,
            input_names=list(input_names), output_names=list(OUTPUT_NAMES), dynamic_axes=axes,
            opset_version=OPSET, do_constant_folding=True,
        )
    # The exporter restores the wrapper's mode afterwards; eval again so the reference below
    # runs without dropout whatever that mode was.
    wrapper.eval()
    return _check_attentions(wrapper, target, tokenizer, texts, input_names, max_length)


class _WithAttentions(torch.nn.Module):
    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                         output_attentions=True, return_dict=True, **kwargs)
        return out.logits, torch.stack(out.attentions, dim=1)


def _encode(tokenizer, texts, input_names, max_length):
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                    return_tensors="pt", return_token_type_ids="token_type_ids" in input_names)
    return {n: enc[n] for n in input_names}


def _check_attentions(wrapper, onnx_path: Path, tokenizer, texts, input_names, max_length) -> dict:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    if outputs != list(OUTPUT_NAMES):
        raise BoundError(f"the explain graph has outputs {outputs}, expected {list(OUTPUT_NAMES)}.")
    # Other texts than the export example, in other shapes (the over-long last sample padded to
    # max_length, then one text alone), so the axes are proven dynamic and the mask live.
    rest = texts[CHECK_TEXTS:] or texts
    batches = [rest[:CHECK_TEXTS] + texts[-1:], rest[:1]]
    worst, row_error = 0.0, 0.0
    for batch in batches:
        enc = _encode(tokenizer, batch, input_names, max_length)
        with torch.no_grad():
            _, reference = wrapper(*(enc[n] for n in input_names))
        _, attentions = session.run(None, {n: enc[n].numpy() for n in input_names})
        if attentions.shape != tuple(reference.shape):
            raise BoundError(f"explain variant: attentions of shape {attentions.shape}, PyTorch "
                             f"gives {tuple(reference.shape)}.")
        worst = max(worst, float(np.abs(attentions - reference.numpy()).max()))
        row_error = max(row_error, float(np.abs(attentions.sum(-1) - 1).max()))
    figures = {"samples": sum(len(b) for b in batches), "max_abs_attention_diff": worst,
               "max_row_sum_error": row_error, "bound": MAX_ATTENTION_DIFF}
    if worst > MAX_ATTENTION_DIFF or row_error > MAX_ATTENTION_DIFF:
        figures["failure"] = (f"attentions differ from PyTorch by {worst:.3g} (rows sum to 1 "
                              f"within {row_error:.3g}); the bound is {MAX_ATTENTION_DIFF}")
    return figures
