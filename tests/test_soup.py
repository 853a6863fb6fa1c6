"""experiments/soup.py: averaging fine-tuned checkpoints, and its refusals."""

import json
import sys
from pathlib import Path

import pytest

# experiments/ is not installed with the package: import it from the checkout
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments.soup import SoupError, average_checkpoints, main  # noqa: E402


def _shifted_copy(src: Path, dst: Path, delta: float) -> Path:
    """The checkpoint at `src` with `delta` added to every floating-point weight."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(src)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(delta)
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst


def test_soup_is_the_parameter_mean(tiny_checkpoints, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification

    src = tiny_checkpoints["topic"]
    shifted = _shifted_copy(src, tmp_path / "shifted", 1.0)
    out = average_checkpoints([src, shifted], tmp_path / "soup")

    original = dict(AutoModelForSequenceClassification.from_pretrained(src).named_parameters())
    soup = dict(AutoModelForSequenceClassification.from_pretrained(out).named_parameters())
    assert soup.keys() == original.keys()
    for name, value in original.items():  # every parameter: halfway to the copy shifted by 1
        assert torch.allclose(soup[name], value + 0.5, atol=1e-6), name
    meta = json.loads((out / "textcls_train.json").read_text())
    assert meta["soup_of"] == [str(src), str(shifted)]
    assert "eval" not in meta  # the first run's figures do not describe the soup
    assert meta["config"]["max_length"] > 0


def test_soup_of_one_checkpoint_is_refused(tiny_checkpoints, tmp_path):
    with pytest.raises(SoupError, match="at least two"):
        average_checkpoints([tiny_checkpoints["topic"]], tmp_path / "soup")


def test_soup_of_different_tasks_is_refused(tiny_checkpoints, capsys):
    from train.demo_data import demo_path

    with pytest.raises(SystemExit) as exit_info:
        main([str(tiny_checkpoints["topic"]), str(tiny_checkpoints["sentiment"]),
              "--data", str(demo_path("sentiment", "dev"))])
    assert exit_info.value.code == 2
    assert "Average checkpoints of one task and base only" in capsys.readouterr().err


def test_soup_refuses_a_missing_dev_file(tiny_checkpoints, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tiny_checkpoints["topic"]), str(tiny_checkpoints["topic"]),
              "--data", str(tmp_path / "missing.csv")])
    assert exit_info.value.code == 2
    assert "missing.csv" in capsys.readouterr().err


def test_soup_scores_every_checkpoint_and_the_average(tiny_checkpoints, tmp_path, capsys):
    from train.demo_data import demo_path

    src = tiny_checkpoints["sentiment"]
    shifted = _shifted_copy(src, tmp_path / "same", 0.0)
    assert main([str(src), str(shifted), "--data", str(demo_path("sentiment", "dev"))]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    figures = [float(line.split("\t")[1]) for line in lines]
    assert len(figures) == 4
    assert lines[2].startswith("average of 2") and lines[3].startswith("ensemble of 2")
    assert len(set(figures)) == 1  # the mean of a checkpoint with itself is itself


def test_soup_ensemble_averages_the_members_probabilities(tiny_checkpoints, tmp_path, capsys):
    """One member made certain of the first label: the mean of the two members' probabilities
    picks that label for every text, so the ensemble scores that label's share of the dev file."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from train.data import load_labelled
    from train.demo_data import demo_path

    src = tiny_checkpoints["sentiment"]
    sure = AutoModelForSequenceClassification.from_pretrained(src)
    with torch.no_grad():
        sure.classifier.bias[0] += 50.0
    sure.save_pretrained(tmp_path / "sure")
    AutoTokenizer.from_pretrained(src).save_pretrained(tmp_path / "sure")

    dev = demo_path("sentiment", "dev")
    assert main([str(src), str(tmp_path / "sure"), "--data", str(dev)]) == 0
    figures = [float(line.split("\t")[1]) for line in capsys.readouterr().out.strip().splitlines()]
    first = AutoConfig.from_pretrained(src).id2label[0]
    labels = load_labelled(dev).labels
    share = round(sum(label == first for label in labels) / len(labels), 4)
    assert figures[0] >= 0.8 and figures[1] == share  # the trained member, the certain one
    assert figures[3] == share


def test_soup_refuses_a_folder_that_is_not_a_checkpoint(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path), str(tmp_path), "--data", "x.csv"])
    assert exit_info.value.code == 2
    assert "no config.json" in capsys.readouterr().err
