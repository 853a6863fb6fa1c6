"""Explanations from the bundle's `explain` variant, on the tiny BERT and RoBERTa bundles (conftest):
the export's checks, shapes, normalisation, agreement with the served variant, the CLI, errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import ROOT, TASK_ARCH, TINY_DIMS
from export.bundle_export import CPU_CANDIDATES
from export.explain_export import MAX_ATTENTION_DIFF
from engine.bundle import Bundle, BundleError
from engine.engine import Engine
from engine.explain import ExplainError, Explainer, attention_rollout
from textcls.cli import app

runner = CliRunner()

TEXTS = [
    "a wonderful, moving film",
    "dull",
    "The plot made no sense and the acting was wooden; I left before the end of this mess.",
    "Markets rallied as tech shares climbed",
    "The home side won the final in extra time.",
    "A new chip promises faster phones and longer battery life.",
]


@pytest.fixture(scope="module")
def explainers(tiny_bundles) -> dict[str, Explainer]:
    return {task: Explainer(Bundle.load(path), device="cpu") for task, path in tiny_bundles.items()}


@pytest.fixture(params=sorted(TASK_ARCH))
def explainer(request, explainers) -> Explainer:
    return explainers[request.param]


# --- the export --------------------------------------------------------------------------------

@pytest.mark.parametrize("task", sorted(TASK_ARCH))
def test_the_explain_variant_is_checked_but_never_served(tiny_manifests, task):
    manifest = tiny_manifests[task]
    entry = manifest["variants"]["explain"]
    assert entry["file"] == "model_explain.onnx" and entry["verdict"] == "passed", entry
    assert entry["parity"]["max_abs_logit_diff"] < 1e-4 and entry["parity"]["label_agreement"] == 1.0
    attention = entry["attention_parity"]
    assert attention["max_abs_attention_diff"] <= MAX_ATTENTION_DIFF and attention["samples"] > 1
    assert "explain" not in CPU_CANDIDATES and manifest["cpu_variant"] != "explain"
    assert manifest["gpu_variant"] != "explain"
    assert manifest["timings"]["explain_seconds"] > 0


# --- what an explanation holds -----------------------------------------------------------------

def test_shapes_agree(explainer):
    assert (explainer.layers, explainer.heads) == (TINY_DIMS["num_hidden_layers"],
                                                   TINY_DIMS["num_attention_heads"])
    for text in TEXTS:
        e = explainer.explain(text)
        n = len(e.tokens)
        assert len(e.special) == len(e.offsets) == n == len(e.weights)
        assert e.attention.shape == (n, n)
        assert e.special[0] and e.special[-1] and not any(e.special[1:-1])  # [CLS] ... [SEP] / <s> ... </s>
        assert e.layer == explainer.layers - 1 and e.head is None
        for token, special, (a, b) in zip(e.tokens, e.special, e.offsets):
            if not special:
                assert token == text[a:b] and token.strip()


def test_weights_are_normalised_over_the_real_tokens(explainer):
    for text in TEXTS:
        weights = explainer.explain(text).weights
        special = np.array(explainer.explain(text).special)
        assert np.all(weights >= 0)
        assert np.all(weights[special] == 0)
        assert weights.sum() == pytest.approx(1.0, abs=1e-5)
        assert np.all(weights[~special] > 0)


def test_every_attention_matrix_is_row_stochastic(explainer):
    text = TEXTS[2]
    for layer in range(explainer.layers):
        for head in [None, *range(explainer.heads)]:
            matrix = explainer.explain(text, layer=layer, head=head).attention
            assert np.all(matrix >= 0)
            np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-5)


def test_layer_and_head_choose_the_matrix(explainer):
    text = TEXTS[0]
    last = explainer.explain(text, layer=explainer.layers - 1)
    np.testing.assert_array_equal(explainer.explain(text, layer=-1).attention, last.attention)
    heads = [explainer.explain(text, layer=0, head=h).attention for h in range(explainer.heads)]
    mean = explainer.explain(text, layer=0).attention
    np.testing.assert_allclose(np.mean(heads, axis=0), mean, atol=1e-6)
    assert not np.allclose(heads[0], heads[1]), "two heads of a trained model should differ"
    # the rollout uses every layer, whatever the heatmap shows
    np.testing.assert_array_equal(explainer.explain(text, layer=0, head=1).weights, last.weights)


def test_truncated_texts_are_flagged(explainer):
    e = explainer.explain("word " * (explainer.bundle.max_length * 2))
    assert e.truncated and len(e.tokens) == explainer.bundle.max_length
    assert e.to_dict()["truncated"] is True
    assert not explainer.explain(TEXTS[0]).truncated


def test_top_tokens_and_json(explainer):
    e = explainer.explain(TEXTS[2])
    top = e.top_tokens(3)
    assert len(top) == 3
    assert [t.weight for t in top] == sorted((t.weight for t in top), reverse=True)
    assert all(not e.special[t.index] and e.tokens[t.index] == t.token for t in top)
    assert top[0].weight == pytest.approx(float(e.weights.max()))
    real = sum(not s for s in e.special)
    assert len(e.top_tokens(1000)) == real  # never a special token, whatever k
    with pytest.raises(ExplainError):
        e.top_tokens(0)
    payload = json.loads(json.dumps(e.to_dict()))
    assert set(payload) == {"tokens", "label", "score", "weights", "method", "truncated"}
    assert payload["truncated"] is False
    assert payload["method"] == "attention-rollout" and payload["label"] in explainer.labels
    assert len(payload["tokens"]) == len(payload["weights"]) and payload["tokens"] == e.tokens


# --- the prediction agrees with what is served --------------------------------------------------

@pytest.mark.parametrize("task", sorted(TASK_ARCH))
def test_explain_predicts_the_served_label(explainers, task):
    explainer = explainers[task]
    bundle = explainer.bundle
    served = Engine(bundle, variant=bundle.cpu_variant, device="cpu").predict(TEXTS)
    fp32 = Engine(bundle, variant="fp32", device="cpu").predict(TEXTS)
    for text, s, f in zip(TEXTS, served, fp32):
        e = explainer.explain(text)
        assert e.label == s.label, (task, bundle.cpu_variant, text)
        # the explain graph is the fp32 model with extra outputs: the same probabilities
        assert e.scores == pytest.approx(f.scores, abs=1e-5)
        assert e.score == e.scores[e.label] == max(e.scores.values())


# --- attention rollout, by hand -----------------------------------------------------------------

def test_rollout_of_one_layer_mixes_in_the_identity():
    attention = np.array([[[0.5, 0.5], [0.0, 1.0]]])[None]  # (1 layer, 1 head, 2, 2)
    # (A + I) with rows re-normalised: [[0.75, 0.25], [0, 1]]
    np.testing.assert_allclose(attention_rollout(attention), [[0.75, 0.25], [0.0, 1.0]])


def test_rollout_averages_heads_and_multiplies_layers_in_order():
    rng = np.random.default_rng(0)
    raw = rng.random((3, 4, 5, 5))
    attentions = raw / raw.sum(axis=-1, keepdims=True)
    expected = np.eye(5)
    for layer in attentions:
        a = layer.mean(axis=0) + np.eye(5)
        expected = (a / a.sum(axis=-1, keepdims=True)) @ expected
    rollout = attention_rollout(attentions)
    np.testing.assert_allclose(rollout, expected)
    np.testing.assert_allclose(rollout.sum(axis=1), 1.0)
    with pytest.raises(ValueError):
        attention_rollout(attentions[0])


# --- the serving path stays torch-free ----------------------------------------------------------

def test_explaining_never_imports_torch(tiny_bundles):
    code = (
        "import sys; from engine.bundle import Bundle; from engine.explain import Explainer; "
        f"e = Explainer(Bundle.load({str(tiny_bundles['sentiment'])!r}), device='cpu'); "
        "e.explain('a fine film').to_dict(); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# --- the CLI ------------------------------------------------------------------------------------

def test_cli_writes_a_heatmap_and_prints_the_top_tokens(tiny_bundles, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default output path is relative: reports/explain-<task>.png
    result = runner.invoke(app, ["explain", "--task", "sentiment", "a wonderful, moving film", "--top", "2"])
    assert result.exit_code == 0, result.output
    png = tmp_path / "reports" / "explain-sentiment.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    lines = result.stdout.splitlines()
    label = lines[0].split()[1]
    assert lines[0].startswith("label: ") and label in Bundle.load(tiny_bundles["sentiment"]).labels
    assert "top tokens" in lines[1]
    top = [line.split() for line in lines[2:]]
    assert len(top) == 2 and all(t[1] in "a wonderful, moving film" for t in top)
    assert float(top[0][0]) >= float(top[1][0])


def test_cli_takes_a_bundle_directory_layer_head_and_output(tiny_bundles, tmp_path):
    out = tmp_path / "sub" / "topic.png"
    result = runner.invoke(app, ["explain", "--model", str(tiny_bundles["topic"]), "--layer", "0",
                                 "--head", "1", "--output", str(out), "Markets rallied as tech shares climbed"])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 5000


def _fails(args, *needles):
    result = runner.invoke(app, ["explain", *args])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())  # rich wraps long messages
    for needle in needles:
        assert needle in text, text
    assert "Traceback" not in result.output


def test_cli_errors(tiny_bundles, tmp_path):
    model = ["--model", str(tiny_bundles["sentiment"]), "--output", str(tmp_path / "x.png")]
    layers = TINY_DIMS["num_hidden_layers"]
    _fails([*model, "--layer", str(layers), "fine"], f"layer {layers} does not exist", f"has {layers} layers")
    _fails([*model, "--layer", "-3", "fine"], "layer -3 does not exist")
    heads = TINY_DIMS["num_attention_heads"]
    _fails([*model, "--head", str(heads), "fine"], f"head {heads} does not exist", f"has {heads} heads")
    _fails([*model, ""], "the text is empty")
    _fails([*model, "   \n"], "the text is empty")
    _fails([*model, "--top", "0", "fine"], "--top must be at least 1")
    _fails(["fine"], "give either --task or --model")
    _fails(["--task", "sentiment", "--model", str(tiny_bundles["topic"]), "fine"], "give either --task or --model")
    _fails(["--task", "nosuchtask", "fine"], "no model 'nosuchtask:latest'")
    assert not (tmp_path / "x.png").exists(), "no heatmap for a failed explanation"


def test_a_bundle_without_the_explain_variant(tiny_bundles, tmp_path):
    old = tmp_path / "old-bundle"
    shutil.copytree(tiny_bundles["sentiment"], old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["variants"]["explain"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    (old / "model_explain.onnx").unlink()
    with pytest.raises(BundleError, match="re-export with textcls export"):
        Explainer(Bundle.load(old))
    _fails(["--model", str(old), "fine"], "has no 'explain' variant", "re-export with textcls export")


def test_a_failed_explain_variant_is_never_used(tiny_bundles, tmp_path):
    from service.models import make_explainer
    from service.settings import ServiceSettings

    failed = tmp_path / "failed-explain"
    shutil.copytree(tiny_bundles["sentiment"], failed)
    manifest = json.loads((failed / "manifest.json").read_text())
    manifest["variants"]["explain"].update(verdict="failed", failure="attentions differ from PyTorch")
    (failed / "manifest.json").write_text(json.dumps(manifest))
    bundle = Bundle.load(failed)
    with pytest.raises(BundleError, match="failed the export's checks"):
        Explainer(bundle)
    _fails(["--model", str(failed), "fine"], "failed the export's checks")
    engine = Engine(bundle, device="cpu")  # predictions are still served from the CPU variant
    assert make_explainer(engine, ServiceSettings()) is None  # so POST /explain answers 422


def test_explainer_errors_name_what_is_allowed(explainers):
    explainer = explainers["topic"]
    for bad in ("", "  ", None):
        with pytest.raises(ExplainError, match="empty"):
            explainer.explain(bad)
    with pytest.raises(ExplainError, match=f"0 to {explainer.layers - 1}, or -1"):
        explainer.explain("fine", layer=7)
    with pytest.raises(ExplainError, match="head"):
        explainer.explain("fine", head=-explainer.heads - 1)
    with pytest.raises(ExplainError):
        explainer.explain("fine", layer=True)  # a bool is not a layer number


# --- long texts: explained as the engine reads them ---------------------------------------------

LONG = ("The film opens slowly and the first hour is dull, the acting wooden and the plot hard to "
        "follow. Markets rallied as tech shares climbed. ") * 5 + "But the ending is wonderful and moving."


def _reading(tiny_bundles, task, rule):
    """An explainer and the explain graph's engine, both reading long texts by ``rule`` (as the
    service sets its explainer to the served rule)."""
    bundle = Bundle.load(tiny_bundles[task])
    explainer = Explainer(bundle, device="cpu", threads=1)
    explainer.engine.long_texts = rule
    return explainer, Engine(bundle, variant="explain", device="cpu", threads=1, long_texts=rule)


@pytest.mark.parametrize("task", sorted(TASK_ARCH))
def test_a_long_text_is_explained_window_by_window_under_chunk(tiny_bundles, task):
    from engine.long_texts import LongTextRule

    explainer, engine = _reading(tiny_bundles, task, LongTextRule("chunk", max_windows=16, overlap=8))
    encoding = engine.tokenizer.encode(LONG)
    n = len(encoding.ids)
    assert n > 3 * explainer.bundle.max_length
    result = engine.run([LONG])
    assert result.windows[0] > 2 and result.truncated == [False]  # within max_windows

    e = explainer.explain(LONG)
    assert e.truncated is False and e.to_dict()["truncated"] is False
    # every token is read, to the very end of the text
    assert len(e.tokens) == n and e.offsets == [tuple(o) for o in encoding.offsets]
    assert max(b for _, b in e.offsets) == max(b for _, b in encoding.offsets)
    assert e.offsets[-2][1] == len(LONG) and e.tokens[-2] == "."  # the text's last token is there
    special = np.array(e.special)
    assert special.tolist() == [bool(s) for s in encoding.special_tokens_mask]
    assert e.weights.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.all(e.weights[special] == 0) and np.all(e.weights[~special] > 0)
    assert e.weights[-8:][~special[-8:]].sum() > 0  # the end weighs something
    assert e.attention.shape == (n, n)
    np.testing.assert_allclose(e.attention.sum(axis=1), 1.0, atol=1e-5)
    # the label and the probabilities are the engine's for the text (windows averaged alike)
    served = result.predictions[0]
    assert e.label == served.label and e.scores == pytest.approx(served.scores, abs=1e-5)
    # and differ from those of its first window alone
    truncate, _ = _reading(tiny_bundles, task, LongTextRule("truncate"))
    first = truncate.explain(LONG)
    assert first.truncated and len(first.tokens) == explainer.bundle.max_length
    assert e.scores != pytest.approx(first.scores, abs=1e-4)


@pytest.mark.parametrize("task", sorted(TASK_ARCH))
def test_past_max_windows_and_under_head_tail_the_explanation_is_flagged_but_reaches_the_end(tiny_bundles, task):
    from engine.long_texts import LongTextRule

    for rule in (LongTextRule("chunk", max_windows=2, overlap=8), LongTextRule("head_tail", head=8)):
        explainer, engine = _reading(tiny_bundles, task, rule)
        encoding = engine.tokenizer.encode(LONG)
        e = explainer.explain(LONG)
        assert e.truncated is True and e.to_dict()["truncated"] is True
        max_length = explainer.bundle.max_length
        windows = 2 if rule.rule == "chunk" else 1
        assert len(e.tokens) == windows * max_length - 2 * (windows - 1) < len(encoding.ids)
        assert e.offsets[-2] == tuple(encoding.offsets[-2]) and e.offsets[-2][1] == len(LONG)  # the end is read
        assert e.offsets[1] == tuple(encoding.offsets[1])  # and the first
        assert e.weights.sum() == pytest.approx(1.0, abs=1e-5) and np.all(e.weights[np.array(e.special)] == 0)
        assert e.label == engine.predict([LONG])[0].label


def test_short_texts_are_explained_alike_under_every_rule(tiny_bundles, explainers):
    from engine.long_texts import LongTextRule

    default = explainers["sentiment"]
    for rule in (LongTextRule("chunk"), LongTextRule("head_tail")):
        explainer, _ = _reading(tiny_bundles, "sentiment", rule)
        for text in TEXTS[:3]:
            a, b = explainer.explain(text), default.explain(text)
            assert a.tokens == b.tokens and a.label == b.label and not a.truncated
            np.testing.assert_allclose(a.weights, b.weights, atol=1e-6)
            np.testing.assert_allclose(a.attention, b.attention, atol=1e-6)
