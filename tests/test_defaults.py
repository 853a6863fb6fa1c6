"""`textcls build-defaults`: the demo models built by the library (export.defaults), which the CLI
only calls. Issue 10: the command once called the `train` and `export` commands as functions, so
every option it did not pass arrived as a Typer OptionInfo, and `make serve` crashed on a fresh
machine."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import ROOT, TASK_ARCH
from textcls.cli import app

runner = CliRunner()


def stored(name: str) -> int:
    import bentoml

    return sum(1 for m in bentoml.models.list() if m.tag.name == name)


def test_build_defaults_builds_stores_and_then_keeps_what_is_stored(tiny_bases, tmp_path, monkeypatch, keep_store):
    import bentoml

    monkeypatch.chdir(tmp_path)  # checkpoints/ and bundles/ land here, as in a fresh clone
    base = str(tiny_bases[TASK_ARCH["sentiment"]])
    before = stored("sentiment")
    built = runner.invoke(app, ["build-defaults", "--tasks", "sentiment", "--force",
                                "--base-model", base, "--epochs", "1"])
    assert built.exit_code == 0, built.output
    assert stored("sentiment") == before + 1
    latest = bentoml.models.get("sentiment:latest")
    manifest = json.loads((Path(latest.path) / "manifest.json").read_text())
    assert manifest["source"]["base_model"] == base
    assert manifest["eval"]["source"].endswith("sentiment_dev.csv")  # checked on the demo dev set
    assert {v["verdict"] for v in manifest["variants"].values()} <= {"passed", "failed", "unchecked"}
    assert manifest["variants"][manifest["cpu_variant"]]["verdict"] == "passed"
    assert (tmp_path / "checkpoints" / "sentiment" / "textcls_train.json").is_file()
    assert "demo models" in built.output and str(latest.tag) in built.output

    again = runner.invoke(app, ["build-defaults", "--tasks", "sentiment", "--base-model", base])
    assert again.exit_code == 0, again.output
    assert "already stored" in again.output
    assert stored("sentiment") == before + 1, "a stored model is not rebuilt"


def test_build_defaults_refuses_a_task_without_a_demo_set():
    result = runner.invoke(app, ["build-defaults", "--tasks", "sentiment,emotion"])
    assert result.exit_code == 2
    assert "--tasks" in result.output and "emotion" in result.output


def test_train_configs_take_every_other_setting_from_the_stage(tmp_path):
    """The demo run names only what differs from TrainConfig's and ExportConfig's defaults: an
    option added to a stage later gets the stage's default here too."""
    from export.bundle_export import ExportConfig
    from export.defaults import DefaultsConfig, export_config, train_config
    from train.finetune import TrainConfig, with_demo_data

    config = DefaultsConfig(checkpoints=tmp_path / "c", bundles=tmp_path / "b")
    run = with_demo_data(train_config("topic", config))
    assert run.data[0].endswith("topic_train.csv") and run.eval_data.endswith("topic_dev.csv")
    assert run.output == tmp_path / "c" / "topic"
    assert run.precision == TrainConfig.model_fields["precision"].default
    assert run.layer_decay == TrainConfig.model_fields["layer_decay"].default
    exp = export_config("topic", config)
    assert exp.checkpoint == run.output and exp.output == tmp_path / "b" / "topic"
    assert exp.variants == ExportConfig.model_fields["variants"].default_factory()


def test_train_without_data_needs_a_demo_task(tmp_path):
    result = runner.invoke(app, ["train", "--task", "emotion", "--output", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "no demo set for task 'emotion'" in result.output


def test_no_cli_command_is_called_as_a_function():
    """A Typer command called from Python gets OptionInfo objects for the options it is not
    passed; commands must only be invoked by Typer. The CLI calls library functions instead."""
    tree = ast.parse((ROOT / "textcls" / "cli.py").read_text())
    commands = {
        node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
        and any(isinstance(d, ast.Call) and getattr(d.func, "attr", "") == "command" for d in node.decorator_list)
    }
    assert {"train", "export", "build_defaults"} <= commands
    calls = {node.func.id for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert not commands & calls, f"commands called as functions: {sorted(commands & calls)}"
