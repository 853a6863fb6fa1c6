"""train -> export -> evaluate on tiny random BERT and RoBERTa checkpoints (fixtures in conftest)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from conftest import TASK_ARCH, demo_files
from export.bundle_export import BOUNDS, within_accuracy_drop
from engine.bundle import BundleError
from textcls.cli import app

runner = CliRunner()
VARIANTS = ["fp32", "int8", "optimized", "fp16", "explain"]


def test_training_learns_the_demo_task(tiny_checkpoints):
    for task, ckpt in tiny_checkpoints.items():
        info = json.loads((ckpt / "textcls_train.json").read_text())
        # chance is 0.5 (sentiment) and 0.25 (topic): a model that learnt nothing fails here
        assert info["eval"]["accuracy"] >= 0.8, (task, info["eval"])
        config = json.loads((ckpt / "config.json").read_text())
        assert config["model_type"] == TASK_ARCH[task]
        assert list(config["id2label"].values()) == info["labels"]
        for name in ("report.json", "report.md", "confusion_matrix.png"):
            assert (ckpt / "report" / name).stat().st_size > 0
        # one row per epoch (the fixture trains 20), each with its loss and held-out accuracy; the
        # last epoch's in-training figure is the model the report measured after reloading it
        assert info["precision"] == "fp32"
        assert [row["epoch"] for row in info["epochs"]] == [float(e) for e in range(1, 21)]
        assert all({"train_loss", "eval_accuracy"} <= set(row) for row in info["epochs"])
        assert info["epochs"][-1]["eval_accuracy"] == round(info["eval"]["accuracy"], 4)


def test_auto_precision_follows_the_hardware(monkeypatch):
    import torch

    from train import finetune

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(finetune, "_cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    assert finetune.resolve_precision("auto") == "bf16"
    monkeypatch.setattr(finetune, "_cpu_flags", lambda: {"avx2", "avx512f"})  # bf16 would be emulated
    assert finetune.resolve_precision("auto") == "fp32"
    assert finetune.resolve_precision("bf16") == "bf16"  # asked for by name: honoured
    assert finetune.resolve_precision("fp32") == "fp32"


def test_fp32_training_repeats_exactly(tiny_bases, tmp_path):
    """The documented promise of --precision fp32: the same command gives the same weights."""
    from safetensors.torch import load_file

    from train.finetune import TrainConfig, train

    data, dev = demo_files("sentiment")
    weights = []
    for run in ("a", "b"):
        train(TrainConfig(task="sentiment", data=[data], eval_data=dev, output=tmp_path / run,
                          base_model=str(tiny_bases[TASK_ARCH["sentiment"]]), max_length=32,
                          epochs=2, limit=200, learning_rate=2e-3, batch_size=32, seed=7,
                          precision="fp32"))
        weights.append(load_file(tmp_path / run / "model.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert (weights[0][key] == weights[1][key]).all(), key


@pytest.mark.parametrize("arch", sorted(set(TASK_ARCH.values())))
def test_layer_decay_groups_every_parameter_by_depth(tiny_bases, arch):
    from transformers import AutoModelForSequenceClassification

    from train.finetune import layer_depth, layerwise_param_groups

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bases[arch], num_labels=2)
    top = model.config.num_hidden_layers + 1
    no_decay = {n for n, _ in model.named_parameters() if "bias" in n or "LayerNorm" in n}
    decay_names = {n for n, _ in model.named_parameters()} - no_decay
    groups = layerwise_param_groups(model, 1e-3, 0.5, 0.01, decay_names)

    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # each one, exactly once
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    wd_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    depths = set()
    for name, param in model.named_parameters():
        depth = layer_depth(name, model.config.num_hidden_layers)
        depths.add(depth)
        assert lr_of[id(param)] == pytest.approx(1e-3 * 0.5 ** (top - depth)), name
        assert wd_of[id(param)] == (0.0 if name in no_decay else 0.01), name
        if "classifier" in name:
            assert depth == top and lr_of[id(param)] == pytest.approx(1e-3), name
        if "word_embeddings" in name:
            assert depth == 0, name
    assert depths == set(range(top + 1))  # embeddings, every layer, the head


def test_layer_decay_slows_the_lower_layers(tiny_bases, tmp_path):
    """Trained with --layer-decay 0.1, the embeddings move far less than with one rate for all."""
    from safetensors.torch import load_file

    from train.finetune import TrainConfig, train

    base = tiny_bases[TASK_ARCH["sentiment"]]
    data, dev = demo_files("sentiment")
    moved = {}
    for decay in (1.0, 0.1):
        out = tmp_path / str(decay)
        train(TrainConfig(task="sentiment", data=[data], eval_data=dev, output=out, base_model=str(base),
                          max_length=32, epochs=1, limit=200, learning_rate=2e-3, batch_size=32,
                          seed=7, layer_decay=decay))
        assert json.loads((out / "textcls_train.json").read_text())["config"]["layer_decay"] == decay
        before, after = load_file(base / "model.safetensors"), load_file(out / "model.safetensors")
        key = next(k for k in after if k.endswith("embeddings.word_embeddings.weight"))
        base_key = next(k for k in before if k.endswith("embeddings.word_embeddings.weight"))
        moved[decay] = (after[key] - before[base_key]).abs().max().item()
    assert moved[1.0] > 0
    assert moved[0.1] < 0.05 * moved[1.0], moved


def test_train_layer_decay_out_of_range(tmp_path):
    for bad in ("0", "1.5"):
        result = runner.invoke(app, ["train", "--task", "sentiment", "--layer-decay", bad])
        assert result.exit_code == 2, result.output
        assert "--layer-decay" in result.output


@pytest.mark.parametrize("task", sorted(TASK_ARCH))
def test_every_variant_is_checked_against_pytorch(tiny_manifests, task):
    manifest = tiny_manifests[task]
    assert manifest["model_type"] == TASK_ARCH[task]
    assert sorted(manifest["variants"]) == sorted(VARIANTS)
    for name in VARIANTS:
        variant = manifest["variants"][name]
        assert variant["checked"] is True and variant["verdict"] == "passed", (name, variant)
        parity = variant["parity"]
        assert parity["max_abs_logit_diff"] <= BOUNDS[name].max_abs_logit_diff, name
        assert parity["label_agreement"] >= BOUNDS[name].min_label_agreement, name
        assert 0.0 <= variant["accuracy"] <= 1.0
    # fp32 is the reference export: it must match PyTorch to float noise, on every sample
    assert manifest["variants"]["fp32"]["parity"]["max_abs_logit_diff"] < 1e-4
    assert manifest["variants"]["fp32"]["parity"]["label_agreement"] == 1.0
    assert manifest["cpu_variant"] in ("int8", "optimized", "fp32")
    assert manifest["gpu_variant"] == "fp16"
    assert manifest["format_version"] == 2
    # the choice and its figures: every passed CPU variant timed in the same interleaved rounds
    choice = manifest["cpu_choice"]
    assert choice["variant"] == manifest["cpu_variant"] and choice["reason"]
    assert sorted(choice["seq_per_s"]) == ["fp32", "int8", "optimized"]
    assert all(len(rounds) == choice["rounds"] == 5 for rounds in choice["seq_per_s"].values())
    for name, median in choice["median_seq_per_s"].items():
        assert manifest["variants"][name]["throughput_seq_per_s"] == median > 0
    assert len(manifest["source"]["sha256"]) == 64
    assert {"torch", "transformers", "onnxruntime", "onnx"} <= set(manifest["versions"])
    assert manifest["store_tag"].startswith(f"{task}:")


def test_bundles_are_in_the_store(tiny_bundles, tiny_manifests):
    for task, path in tiny_bundles.items():
        stored = json.loads((path / "manifest.json").read_text())
        assert stored["source"]["sha256"] == tiny_manifests[task]["source"]["sha256"]
        assert (path / "model_int8.onnx").is_file() and (path / "tokenizer.json").is_file()


def _evaluate(*args):
    result = runner.invoke(app, ["evaluate", *args])
    assert result.exit_code == 0, result.output
    return json.loads([line for line in result.stdout.splitlines() if line.startswith("{")][-1])


def test_evaluate_the_served_bundle_matches_the_export_figures(tiny_bundles, tiny_manifests, tmp_path):
    for task in tiny_bundles:
        dev = demo_files(task)[1]
        out = tmp_path / task
        summary = _evaluate(task, "--data", dev, "--output", str(out))
        manifest = tiny_manifests[task]
        served = manifest["variants"][manifest["cpu_variant"]]
        assert summary["accuracy"] == pytest.approx(served["accuracy"], abs=1e-4)
        report = json.loads((out / "report.json").read_text())
        assert report["n"] == summary["n"] and len(report["confusion_matrix"]) == len(manifest["labels"])
        assert (out / "confusion_matrix.png").stat().st_size > 1000


def test_evaluate_a_bundle_dir_variant_and_a_checkpoint(tiny_bundles, tiny_checkpoints, tiny_manifests, tmp_path):
    dev = demo_files("sentiment")[1]
    fp32 = _evaluate(str(tiny_bundles["sentiment"]), "--variant", "fp32", "--data", dev,
                     "--output", str(tmp_path / "a"))
    assert fp32["accuracy"] == pytest.approx(tiny_manifests["sentiment"]["variants"]["fp32"]["accuracy"], abs=1e-4)
    torch_run = _evaluate(str(tiny_checkpoints["sentiment"]), "--data", dev, "--output", str(tmp_path / "b"))
    assert torch_run["accuracy"] == pytest.approx(tiny_manifests["sentiment"]["pytorch"]["accuracy"], abs=1e-4)


class _Progress:
    """What the evaluate stage reported, in order (train.evaluate.EvaluateProgress)."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def start(self, model, texts, long_texts):
        self.events.append(("start", model, texts, long_texts.rule))

    def advance(self, texts):
        self.events.append(("advance", texts))

    def note(self, message):
        self.events.append(("note", message))


def test_the_evaluate_stage_returns_its_figures_without_the_cli(tiny_bundles, tiny_checkpoints, tiny_manifests,
                                                                tmp_path):
    """The library function a caller other than `textcls evaluate` uses: a typed result, the report
    written, the progress told, and a variant the export failed measured with a note saying so."""
    import shutil

    from train.evaluate import EvaluateConfig, evaluate

    dev = demo_files("sentiment")[1]
    manifest = tiny_manifests["sentiment"]
    progress = _Progress()
    result = evaluate(EvaluateConfig(model=str(tiny_bundles["sentiment"]), data=dev, output=tmp_path / "a"),
                      progress)
    variant = manifest["cpu_variant"]
    assert (result.model, result.variant) == (f"sentiment-{variant}", variant)
    assert result.accuracy == pytest.approx(manifest["variants"][variant]["accuracy"], abs=1e-4)
    assert progress.events[0] == ("start", result.model, result.n, result.long_texts.rule)
    assert [e[1] for e in progress.events[1:]] == [64, 64, result.n - 128]  # EVAL_BATCH_SIZE texts a call
    assert sum(map(sum, result.evaluation.confusion)) == result.n and "precision" in result.evaluation.report_text
    assert result.cost.model_inputs == result.n
    assert result.calibration.ece == pytest.approx(manifest["calibration"]["ece_after"], abs=1e-4)
    assert set(result.plots) == {"confusion matrix", "reliability diagram"}
    assert all(path.parent == tmp_path / "a" and path.read_bytes().startswith(b"\x89PNG")
               for path in result.plots.values())
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert (report["accuracy"], report["ece"]) == (result.accuracy, result.calibration.ece)
    assert result.report == tmp_path / "a" / "report.md" and result.report.is_file()
    assert result.to_dict()["accuracy"] == round(result.accuracy, 4)

    # a variant the export failed is measured when named, and the stage says it is never served
    bundle = shutil.copytree(tiny_bundles["sentiment"], tmp_path / "failed")
    failed = json.loads((bundle / "manifest.json").read_text())
    failed["variants"]["fp32"].update(verdict="failed", failure="made up by the test")
    (bundle / "manifest.json").write_text(json.dumps(failed))
    progress = _Progress()
    result = evaluate(EvaluateConfig(model=str(bundle), data=dev, variant="fp32", output=tmp_path / "b"),
                      progress)
    assert result.variant == "fp32"
    assert progress.events[0] == ("note", "variant fp32 failed the export's checks and is never served "
                                          "(made up by the test)")

    # a checkpoint: PyTorch's figures, no cost or calibration (its scores are never served)
    result = evaluate(EvaluateConfig(model=str(tiny_checkpoints["sentiment"]), data=dev, output=tmp_path / "c"))
    assert (result.variant, result.cost, result.calibration) == (None, None, None)
    assert result.model.endswith("-pytorch") and set(result.plots) == {"confusion matrix"}
    assert result.accuracy == pytest.approx(manifest["pytorch"]["accuracy"], abs=1e-4)


def _export(args, tmp_path):
    result = runner.invoke(app, ["export", *args, "--output", str(tmp_path / "b")])
    return result, json.loads((tmp_path / "b" / "manifest.json").read_text())


def test_a_failed_variant_is_marked_never_served_and_the_bundle_is_stored(tiny_checkpoints, tmp_path, monkeypatch,
                                                                       keep_store):
    import bentoml

    from export import bundle_export
    from engine.bundle import Bundle
    from engine.engine import Engine

    before = len(bentoml.models.list("sentiment"))
    # an int8 graph can never match PyTorch exactly: with a zero bound it must fail
    monkeypatch.setitem(bundle_export.BOUNDS, "int8", bundle_export.Bound(0.0, 1.0))
    result, manifest = _export([str(tiny_checkpoints["sentiment"]), "--task", "sentiment",
                                "--variants", "fp32,int8,optimized"], tmp_path)
    assert result.exit_code == 0, result.output
    assert "failed, never served" in result.output and "int8: max |Δlogit|" in result.output
    int8 = manifest["variants"]["int8"]
    assert int8["verdict"] == "failed" and "max |Δlogit|" in int8["failure"]
    assert int8["parity"]["max_abs_logit_diff"] > 0  # its figures are kept
    assert manifest["variants"]["fp32"]["verdict"] == "passed"
    assert manifest["cpu_variant"] in ("fp32", "optimized")
    assert len(bentoml.models.list("sentiment")) == before + 1
    stored = bentoml.models.get(manifest["store_tag"])
    assert stored.info.metadata["verdicts"]["int8"] == "failed"
    # the engine serves the chosen variant and refuses the failed one unless asked on purpose
    bundle = Bundle.load(stored.path)
    assert Engine(bundle, device="cpu").variant == manifest["cpu_variant"]
    with pytest.raises(BundleError, match="failed the export's checks"):
        Engine(bundle, variant="int8", device="cpu")
    assert Engine(bundle, variant="int8", device="cpu", allow_failed=True).variant == "int8"


def test_strict_refuses_the_bundle_when_any_variant_fails(tiny_checkpoints, tmp_path, monkeypatch):
    import bentoml

    from export import bundle_export

    before = len(bentoml.models.list("sentiment"))
    monkeypatch.setitem(bundle_export.BOUNDS, "int8", bundle_export.Bound(0.0, 1.0))
    result, manifest = _export([str(tiny_checkpoints["sentiment"]), "--task", "sentiment",
                                "--variants", "fp32,int8", "--strict"], tmp_path)
    assert result.exit_code == 2
    assert "export refused (--strict)" in result.output and "int8: max |Δlogit|" in result.output
    assert len(bentoml.models.list("sentiment")) == before, "a refused bundle must not reach the store"
    assert manifest["variants"]["int8"]["verdict"] == "failed"


def test_the_export_is_refused_when_no_servable_variant_passed(tiny_checkpoints, tmp_path, monkeypatch):
    import bentoml

    from export import bundle_export

    before = len(bentoml.models.list("topic"))
    for name in ("fp32", "int8"):
        monkeypatch.setitem(bundle_export.BOUNDS, name, bundle_export.Bound(-1.0, 1.0))
    result, manifest = _export([str(tiny_checkpoints["topic"]), "--task", "topic",
                                "--variants", "fp32,int8"], tmp_path)
    assert result.exit_code == 2
    assert "no servable variant" in result.output
    assert manifest["cpu_variant"] is None
    assert len(bentoml.models.list("topic")) == before
    with pytest.raises(BundleError, match="no CPU variant that passed"):
        from engine.bundle import Bundle
        from engine.engine import Engine

        Engine(Bundle.load(tmp_path / "b"), device="cpu")


def test_an_accuracy_loss_within_noise_passes_and_a_significant_one_fails(tiny_checkpoints, tmp_path, monkeypatch):
    """The accuracy rule end to end, with the int8 variant's answers rigged: wrong on 1 text of
    160 passes (p = 0.5); wrong on 12 more than PyTorch fails (p < 0.05), with both figures."""
    from export import bundle_export
    from engine.engine import Engine

    dev = demo_files("sentiment")[1]
    real_predict = Engine.predict

    def rigged(wrong_texts):
        def predict(self, texts):
            out = real_predict(self, texts)
            if self.variant == "int8":
                for p, text in zip(out, texts):
                    if text in wrong_texts:
                        p.label = next(label for label in self.labels if label != p.label)
            return out
        return predict

    from train.data import load_labelled

    data = load_labelled(dev)
    for flips, verdict in ((1, "passed"), (12, "failed")):
        monkeypatch.setattr(Engine, "predict", rigged(set(data.texts[:flips])))
        out = tmp_path / f"flip{flips}"
        result = runner.invoke(app, ["export", str(tiny_checkpoints["sentiment"]), "--task", "sentiment",
                                     "--variants", "fp32,int8", "--eval-data", dev, "--no-save",
                                     "--output", str(out)])
        assert result.exit_code == 0, result.output
        check = json.loads((out / "manifest.json").read_text())["variants"]["int8"]["accuracy_check"]
        assert check["pytorch_only_right"] - check["variant_only_right"] == pytest.approx(flips, abs=2)
        assert check["drop_points"] > 0.5  # past the points bound both times ...
        assert (check["mcnemar_p"] < 0.05) == (verdict == "failed")  # ... the paired test decides
        assert json.loads((out / "manifest.json").read_text())["variants"]["int8"]["verdict"] == verdict
        assert "McNemar test" in result.output


def test_compare_accuracy_counts_only_the_texts_where_the_two_disagree():
    from export.bundle_export import compare_accuracy

    truth = ["a"] * 160
    one_lost = compare_accuracy(truth, ["a"] * 160, ["b"] + ["a"] * 159)
    assert (one_lost.reference_only_right, one_lost.variant_only_right) == (1, 0)
    assert one_lost.drop_points == pytest.approx(0.625)
    assert one_lost.p_value == pytest.approx(0.5)  # a coin flip: no evidence
    assert not one_lost.worse(0.5, 0.05)
    five_lost = compare_accuracy(truth, ["a"] * 160, ["b"] * 5 + ["a"] * 155)
    assert five_lost.p_value == pytest.approx(1 / 32) and five_lost.worse(0.5, 0.05)
    assert not five_lost.worse(5.0, 0.05)  # significant, but within the points bound
    # the same net loss of 1 text, made of 7 lost and 6 gained: not evidence either
    swapped = compare_accuracy(truth, ["a"] * 7 + ["b"] * 6 + ["a"] * 147, ["b"] * 7 + ["a"] * 6 + ["a"] * 147)
    assert (swapped.reference_only_right, swapped.variant_only_right) == (7, 6)
    assert swapped.p_value > 0.4
    same = compare_accuracy(truth, truth, truth)
    assert same.p_value == 1.0 and same.drop_points == 0
    with pytest.raises(ValueError):
        compare_accuracy(truth, truth, truth[:-1])


def test_old_manifests_read_their_passed_flags_as_verdicts(tmp_path):
    """Format 1 bundles written before verdicts existed, through the migration (test_manifest.py)."""
    from engine.bundle import Bundle

    files = {v: {"file": f"{v}.onnx", "device": "cpu"} for v in ("fp32", "int8", "fp16", "optimized")}
    old = {"format_version": 1, "task": "sentiment", "labels": ["negative", "positive"], "max_length": 64,
           "variants": {"fp32": {**files["fp32"], "passed": True}, "int8": {**files["int8"], "passed": False},
                        "fp16": {**files["fp16"], "passed": None},
                        "optimized": {**files["optimized"], "verdict": "failed"}}}
    (tmp_path / "manifest.json").write_text(json.dumps(old))
    (tmp_path / "tokenizer.json").write_text("{}")
    bundle = Bundle.load(tmp_path)
    assert [bundle.verdict(v) for v in ("fp32", "int8", "fp16", "optimized", "absent")] == [
        "passed", "failed", "unchecked", "failed", "unchecked"]


def test_export_without_eval_data_and_without_saving(tiny_checkpoints, tmp_path):
    import bentoml

    before = len(bentoml.models.list("topic"))
    result = runner.invoke(app, ["export", str(tiny_checkpoints["topic"]), "--task", "topic",
                                 "--variants", "fp32,optimized", "--no-save", "--output", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert sorted(manifest["variants"]) == ["fp32", "optimized"]
    assert manifest["gpu_variant"] is None
    assert "accuracy" not in manifest["variants"]["fp32"]  # nothing to measure it on: not claimed
    assert len(bentoml.models.list("topic")) == before


def test_the_accuracy_bound_is_inclusive_and_exact():
    # 5 texts of 1000: exactly 0.5 points, which "at most 0.5 points" allows
    assert within_accuracy_drop(0.915, 0.910, 0.5)
    assert not within_accuracy_drop(0.915, 0.909, 0.5)
    assert within_accuracy_drop(0.90, 0.95, 0.5)  # a variant may be better
    assert not within_accuracy_drop(0.9, 0.9 - 1e-6, 0.0)


def test_a_variant_that_cannot_be_built_is_failed_and_the_rest_are_stored(tiny_checkpoints, tmp_path, monkeypatch):
    from export import bundle_export

    real_build = bundle_export._build_variant

    def broken_optimizer(variant, fp32, target):
        if variant == "optimized":
            raise RuntimeError("fusion pass crashed")
        return real_build(variant, fp32, target)

    monkeypatch.setattr(bundle_export, "_build_variant", broken_optimizer)
    result, manifest = _export([str(tiny_checkpoints["topic"]), "--task", "topic", "--no-save",
                                "--variants", "fp32,int8,optimized"], tmp_path)
    assert result.exit_code == 0, result.output
    optimized = manifest["variants"]["optimized"]
    assert optimized["verdict"] == "failed" and "fusion pass crashed" in optimized["failure"]
    assert not (tmp_path / "b" / "model_optimized.onnx").exists()
    assert manifest["cpu_variant"] in ("fp32", "int8")


def test_an_explain_variant_off_its_attention_bound_is_failed_not_fatal(tiny_checkpoints, tmp_path, monkeypatch):
    from export import explain_export

    monkeypatch.setattr(explain_export, "MAX_ATTENTION_DIFF", -1.0)  # nothing can meet it
    result, manifest = _export([str(tiny_checkpoints["sentiment"]), "--task", "sentiment", "--no-save",
                                "--variants", "fp32,explain"], tmp_path)
    assert result.exit_code == 0, result.output
    explain = manifest["variants"]["explain"]
    assert explain["verdict"] == "failed" and "attentions differ from PyTorch" in explain["failure"]
    assert explain["attention_parity"]["max_abs_attention_diff"] >= 0  # the figures are kept
    from engine.bundle import Bundle
    from engine.explain import Explainer

    with pytest.raises(BundleError, match="failed the export's checks"):
        Explainer(Bundle.load(tmp_path / "b"), device="cpu")


def _long_text_file(tmp_path):
    """Two short and two long labelled texts (over the tiny models' 64 tokens)."""
    import csv

    rows = [("a wonderful, moving film", "positive"), ("dull and far too long", "negative"),
            ("a wonderful moving film with superb acting " * 15, "positive"),
            ("dull boring and far too long awful plot " * 15, "negative")]
    path = tmp_path / "long.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *rows])
    return path


def test_evaluate_reads_long_texts_by_the_bundles_rule_or_the_one_asked_and_records_it(tiny_bundles, tmp_path):
    from dataclasses import replace

    from engine.bundle import Bundle
    from engine.engine import Engine

    data = str(_long_text_file(tmp_path))
    bundle = Bundle.load(tiny_bundles["sentiment"])
    model = str(tiny_bundles["sentiment"])
    result = runner.invoke(app, ["evaluate", model, "--data", data, "--output", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert f"long texts: {bundle.long_texts.rule} (as the model records)" in " ".join(result.output.split())
    default = json.loads([line for line in result.stdout.splitlines() if line.startswith("{")][-1])
    assert default["long_texts"] == bundle.long_texts.to_dict()
    assert (default["texts_over_max_length"], default["long_text_windows"], default["model_inputs"]) == (2, 2, 4)

    result = runner.invoke(app, ["evaluate", model, "--data", data, "--output", str(tmp_path / "b"),
                                 "--long-texts", "chunk", "--max-windows", "3"])
    assert result.exit_code == 0, result.output
    assert ("long texts: chunk (at most 3 windows, 32 tokens shared) (--long-texts/--max-windows)"
            in " ".join(result.output.split()))
    chunked = json.loads([line for line in result.stdout.splitlines() if line.startswith("{")][-1])
    assert chunked["model"].endswith("-chunk-3windows")
    assert chunked["long_texts"] == {**bundle.long_texts.to_dict(), "rule": "chunk", "max_windows": 3}
    # each long text is read as 3 windows: 2 short inputs + 6
    assert (chunked["texts_over_max_length"], chunked["long_text_windows"], chunked["model_inputs"]) == (2, 6, 8)
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["long_texts"] == "chunk (at most 3 windows, 32 tokens shared)"
    assert report["model_inputs"] == 8
    assert "- long_texts: chunk (at most 3 windows" in (tmp_path / "b" / "report.md").read_text()
    # the accuracy is the engine's under that rule
    engine = Engine(bundle, long_texts=replace(bundle.long_texts, rule="chunk", max_windows=3))
    labels = [p.label for p in engine.predict(_texts(data))]
    truth = ["positive", "negative", "positive", "negative"]
    assert chunked["accuracy"] == pytest.approx(sum(a == b for a, b in zip(labels, truth)) / 4)


def _texts(path: str) -> list[str]:
    import csv

    with open(path, newline="") as f:
        return [row["text"] for row in csv.DictReader(f)]


def test_evaluate_a_checkpoint_by_the_rule_asked_and_refuse_bad_long_text_options(tiny_checkpoints, tmp_path):
    data = str(_long_text_file(tmp_path))
    result = runner.invoke(app, ["evaluate", str(tiny_checkpoints["sentiment"]), "--data", data,
                                 "--output", str(tmp_path / "c"), "--long-texts", "head_tail"])
    assert result.exit_code == 0, result.output
    summary = json.loads([line for line in result.stdout.splitlines() if line.startswith("{")][-1])
    assert summary["model"].endswith("-pytorch-head_tail") and summary["long_texts"]["rule"] == "head_tail"
    assert ("long texts: head_tail (32 tokens from the start, the rest from the end)"
            in " ".join(result.output.split()))
    for bad, needle in ((["--long-texts", "middle"], "Invalid value for '--long-texts'"),
                        (["--max-windows", "0"], "Invalid value for '--max-windows'")):
        result = runner.invoke(app, ["evaluate", "sentiment", "--data", data, *bad])
        assert result.exit_code == 2 and needle in " ".join(result.output.split()), result.output
