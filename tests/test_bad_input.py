"""Bad input to train/export/evaluate: a clear message naming the problem, exit status 2."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from core.errors import DataError
from textcls.cli import app
from train.data import load_labelled, load_many

runner = CliRunner()


def _csv(path, rows, columns=("text", "label")):
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False)
    return str(path)


def _fails(args, *needles):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())  # rich wraps long messages
    for needle in needles:
        assert needle in text, text
    assert "Traceback" not in result.output


GOOD = [("a fine film", "positive"), ("a dull film", "negative")] * 3


def test_train_missing_file(tmp_path):
    _fails(["train", "--task", "sentiment", "--data", str(tmp_path / "nope.csv")], "nope.csv does not exist")


def test_train_unknown_columns(tmp_path):
    data = _csv(tmp_path / "d.csv", [("x", "positive")], columns=("review", "label"))
    _fails(["train", "--task", "sentiment", "--data", data], "no column 'text'", "['review', 'label']",
           "--text-column")


def test_train_one_class_only(tmp_path):
    data = _csv(tmp_path / "d.csv", [("good", "positive"), ("great", "positive")])
    _fails(["train", "--task", "sentiment", "--data", data], "only one class ('positive')")


def test_train_empty_texts(tmp_path):
    data = _csv(tmp_path / "d.csv", [("good", "positive"), ("", "negative"), ("   ", "negative")])
    _fails(["train", "--task", "sentiment", "--data", data], "2 empty or non-text", "data rows 2, 3")


def test_train_eval_labels_the_model_does_not_know(tmp_path):
    data = _csv(tmp_path / "d.csv", GOOD)
    dev = _csv(tmp_path / "dev.csv", [("meh", "neutral"), ("fine", "positive")])
    _fails(["train", "--task", "sentiment", "--data", data, "--eval-data", dev],
           "label(s) ['neutral'] that the model does not know")


def test_unsupported_file_type(tmp_path):
    (tmp_path / "d.xlsx").write_text("x")
    _fails(["train", "--task", "sentiment", "--data", str(tmp_path / "d.xlsx")], "unsupported file type '.xlsx'")


def test_unknown_base_model_is_a_clear_error(tmp_path):
    data = _csv(tmp_path / "d.csv", GOOD)
    _fails(["train", "--task", "sentiment", "--data", data, "--base-model", str(tmp_path / "no-model")],
           "could not load base model")


def test_evaluate_labels_the_model_does_not_know(tiny_bundles, tmp_path):
    data = _csv(tmp_path / "d.csv", [("meh", "neutral"), ("fine", "positive")])
    _fails(["evaluate", "sentiment", "--data", data], "['neutral'] that the model does not know",
           "['negative', 'positive']")


def test_evaluate_a_model_that_is_not_there(tiny_bundles, tmp_path):
    data = _csv(tmp_path / "d.csv", GOOD)
    _fails(["evaluate", "nosuchtask", "--data", data], "no model 'nosuchtask:latest'", "textcls export")


def test_export_not_a_checkpoint(tmp_path):
    _fails(["export", str(tmp_path), "--task", "sentiment"], "no config.json")
    _fails(["export", str(tmp_path / "missing"), "--task", "sentiment"], "does not exist")


def test_export_unknown_variant(tiny_checkpoints):
    _fails(["export", str(tiny_checkpoints["sentiment"]), "--task", "sentiment", "--variants", "fp32,int4"],
           "unknown variant(s) ['int4']")


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_jsonl_and_parquet_with_custom_columns(tmp_path, suffix):
    frame = pd.DataFrame({"review": ["good", "bad"], "stars": ["positive", "negative"]})
    path = tmp_path / f"d{suffix}"
    if suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(r) for r in frame.to_dict("records")))
    else:
        frame.to_parquet(path)
    data = load_labelled(path, text_column="review", label_column="stars")
    assert data.texts == ["good", "bad"] and data.labels == ["positive", "negative"]


def test_hub_name_without_network_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="neither a file nor a hub dataset"):
        load_labelled("surely_not_a_dataset_name_xyz")


def test_every_command_has_help():
    for command in ("train", "export", "evaluate", "build-defaults"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output


def test_several_training_files_are_used_together(tmp_path):
    a = _csv(tmp_path / "a.csv", [("good", "positive")])
    b = tmp_path / "b.jsonl"
    b.write_text(json.dumps({"text": "bad", "label": "negative"}))
    data = load_many([a, str(b)])
    assert data.texts == ["good", "bad"] and data.labels == ["positive", "negative"]
    assert "a.csv" in data.source and "b.jsonl" in data.source
    assert load_many([a, str(b)], limit=1).texts == ["good"]
    _fails(["train", "--task", "sentiment", "--data", a, "--data", str(tmp_path / "gone.csv")],
           "gone.csv does not exist")


def test_train_unknown_precision(tmp_path):
    data = _csv(tmp_path / "d.csv", GOOD)
    _fails(["train", "--task", "sentiment", "--data", data, "--precision", "fp16"],
           "--precision", "'fp16' is not one of", "'fp32'", "'bf16'")


def test_config_values_out_of_range_name_the_option(tiny_checkpoints, tmp_path):
    # refused by the stage's config object (pydantic), reported as the CLI option
    _fails(["export", str(tiny_checkpoints["sentiment"]), "--task", "sentiment", "--significance", "1.5",
            "--output", str(tmp_path / "b")], "--significance:", "less than 1")
    _fails(["train", "--task", "sentiment", "--max-length", "4", "--output", str(tmp_path / "c")],
           "--max-length:", "greater than or equal to 8")
    _fails(["build-defaults", "--tasks", "sentiment", "--epochs", "0"], "--epochs:", "greater than 0")
