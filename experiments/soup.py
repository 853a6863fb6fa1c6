"""Average the weights of fine-tuned checkpoints (a uniform "model soup") and score each on a dev file.

    python -m experiments.soup checkpoints/real-sentiment-r1 checkpoints/real-sentiment-s4 \\
        --data ../shared/data/sentiment/sst2_dev.csv [--output checkpoints/soup]

Checkpoints fine-tuned from the same base (and, with the same seed, the same classifier head) can
be averaged parameter by parameter (Wortsman et al., 2022, "Model soups"). This prints the dev
accuracy of every checkpoint, of their average, and of their ensemble (the mean of their class
probabilities: N models run side by side, the usual upper bound for what averaging or distilling
them can give), all with PyTorch in fp32 and the max length of the first checkpoint's training.
--output saves the average as a checkpoint `textcls export` takes. The figures it gave are in
docs/real-data.md; the recipe does not use it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


class SoupError(ValueError):
    """The checkpoints cannot be averaged."""


def average_checkpoints(paths: list[Path], output: Path) -> Path:
    """Write the parameter-wise mean of `paths` (same architecture and labels) to `output`."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from train.finetune import TRAIN_INFO

    if len(paths) < 2:
        raise SoupError("give at least two checkpoints to average.")
    models = [AutoModelForSequenceClassification.from_pretrained(p) for p in paths]
    first = models[0]
    for path, model in zip(paths[1:], models[1:]):
        if type(model) is not type(first) or model.config.id2label != first.config.id2label:
            raise SoupError(
                f"{path} is a {type(model).__name__} with labels {list(model.config.id2label.values())}; "
                f"{paths[0]} is a {type(first).__name__} with labels "
                f"{list(first.config.id2label.values())}. Average checkpoints of one task and base only."
            )
        shapes = {k: v.shape for k, v in model.state_dict().items()}
        if shapes != {k: v.shape for k, v in first.state_dict().items()}:
            raise SoupError(f"{path} has other parameter shapes than {paths[0]}: not the same base model.")
    states = [m.state_dict() for m in models]
    averaged = {
        key: torch.stack([s[key].float() for s in states]).mean(dim=0).to(value.dtype)
        if value.is_floating_point() else value
        for key, value in states[0].items()
    }
    first.load_state_dict(averaged)
    output.mkdir(parents=True, exist_ok=True)
    first.save_pretrained(output)
    AutoTokenizer.from_pretrained(paths[0]).save_pretrained(output)
    info = paths[0] / TRAIN_INFO
    if info.is_file():  # the settings (max_length for `textcls export`), not the first run's figures
        meta = json.loads(info.read_text())
        meta = {"config": meta.get("config", {}), "base_model": meta.get("base_model"),
                "soup_of": [str(p) for p in paths]}
        (output / TRAIN_INFO).write_text(json.dumps(meta, indent=2) + "\n")
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path, help="fine-tuned checkpoint folders")
    parser.add_argument("--data", required=True, help="labelled dev file (CSV, JSONL or Parquet)")
    parser.add_argument("--output", type=Path, help="save the averaged checkpoint here")
    args = parser.parse_args(argv)

    from core.system import available_cores
    from core.errors import UserError
    from train.data import load_labelled
    from train.finetune import predict_in_chunks, torch_scorer, trained_max_length
    from train.report import evaluate

    import numpy as np
    import torch

    torch.set_num_threads(available_cores())
    missing = [str(p) for p in args.checkpoints if not (p / "config.json").is_file()]
    if missing:
        parser.error(f"not a checkpoint folder (no config.json): {', '.join(missing)}")
    try:
        dev = load_labelled(args.data)
    except UserError as exc:
        parser.error(str(exc))
    max_length = trained_max_length(args.checkpoints[0])

    def probabilities(path: Path):
        """(the dev texts' class probabilities, labels) of one checkpoint."""
        scores, labels = torch_scorer(path, max_length)
        return np.array(predict_in_chunks(scores, dev.texts)), labels

    def accuracy(probs, labels: list[str]) -> float:
        return evaluate(dev.labels, [labels[i] for i in probs.argmax(axis=1)], labels).accuracy

    with tempfile.TemporaryDirectory() as tmp:
        try:
            soup = average_checkpoints(args.checkpoints, args.output or Path(tmp) / "soup")
        except SoupError as exc:
            parser.error(str(exc))
        members = []
        for path in args.checkpoints:
            members.append(probabilities(path))
            print(f"{path}\t{accuracy(*members[-1]):.4f}")
        print(f"average of {len(args.checkpoints)}\t{accuracy(*probabilities(soup)):.4f}")
        # average_checkpoints refused members whose labels differ: the first member's are everyone's
        ensemble = np.mean([probs for probs, _ in members], axis=0)
        print(f"ensemble of {len(args.checkpoints)}\t{accuracy(ensemble, members[0][1]):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
