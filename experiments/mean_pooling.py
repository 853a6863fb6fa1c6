"""Experiment: a mean-pooling classification head against the product's [CLS] pooler head.

all-MiniLM-L6-v2 was trained as a sentence encoder with mean pooling over its tokens; `textcls
train` fine-tunes it through AutoModelForSequenceClassification, which classifies from the [CLS]
token through the BERT pooler. This script trains the same encoder with the same Trainer settings
(linear schedule, 10% warm-up, weight decay 0.01, group_by_length, fp32, one seed) but classifies
the attention-masked mean of the last hidden states, and prints the dev accuracy after each epoch.
It does not export or serve anything: the product's export expects the standard HF head. The
figures it gave (no gain over the [CLS] pooler) are in docs/real-data.md.

    python -m experiments.mean_pooling --task topic --data ../shared/data/topic/agnews_train.csv \
        --eval-data ../shared/data/topic/agnews_dev.csv --epochs 4 --learning-rate 5e-5 --batch-size 16
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from torch import nn
from transformers import AutoModel
from transformers.modeling_outputs import SequenceClassifierOutput


class MeanPoolClassifier(nn.Module):
    """The encoder, the attention-masked mean of its last hidden states, dropout, a linear head."""

    def __init__(self, base: str, num_labels: int) -> None:
        super().__init__()
        self.encoder = AutoModel.from_pretrained(base, add_pooling_layer=False)
        hidden = self.encoder.config.hidden_size
        self.dropout = nn.Dropout(self.encoder.config.hidden_dropout_prob)
        self.head = nn.Linear(hidden, num_labels)
        nn.init.normal_(self.head.weight, std=self.encoder.config.initializer_range)  # as HF heads
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        logits = self.head(self.dropout(pooled))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, help="sentiment or topic (sets the label order)")
    parser.add_argument("--data", required=True, action="append", help="training file (repeatable)")
    parser.add_argument("--eval-data", required=True, help="labelled dev file")
    parser.add_argument("--base-model", default=None, help="default: the offline all-MiniLM-L6-v2")
    parser.add_argument("--epochs", type=float, default=4.0)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    import tempfile

    import torch
    import transformers
    from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer

    from core.system import available_cores
    from core.tasks import label_order
    from train.data import load_labelled, load_many
    from train.finetune import (TrainConfig, default_base_model, dev_accuracy, encode_dataset,
                                training_arguments)

    data = load_many(args.data)
    dev = load_labelled(args.eval_data, split="test")
    labels = label_order(args.task, data.classes)
    label2id = {label: i for i, label in enumerate(labels)}
    base = args.base_model or default_base_model()
    torch.set_num_threads(available_cores())
    transformers.set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = MeanPoolClassifier(base, len(labels))

    with tempfile.TemporaryDirectory() as work:
        # the settings `textcls train` uses for the same options (fp32, warm-up, weight decay, ...)
        config = TrainConfig(task=args.task, data=args.data, eval_data=args.eval_data,
                             output=Path(work), base_model=base, max_length=args.max_length,
                             epochs=args.epochs, learning_rate=args.learning_rate,
                             batch_size=args.batch_size, seed=args.seed)
        trainer = Trainer(
            model=model,
            args=training_arguments(config, "fp32", Path(work)),
            train_dataset=encode_dataset(tokenizer, data, label2id, args.max_length),
            eval_dataset=encode_dataset(tokenizer, dev, label2id, args.max_length),
            compute_metrics=dev_accuracy,
            data_collator=DataCollatorWithPadding(tokenizer),
        )
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    curve = [round(e["eval_accuracy"], 4) for e in trainer.state.log_history if "eval_accuracy" in e]
    print(json.dumps({"task": args.task, "head": "mean pooling", "seed": args.seed,
                      "learning_rate": args.learning_rate, "epochs": args.epochs,
                      "dev_accuracy_by_epoch": curve, "final_dev_accuracy": curve[-1],
                      "train_seconds": round(seconds, 1)}))


if __name__ == "__main__":
    main()
