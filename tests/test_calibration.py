"""Temperature scaling of the served scores (export/calibration.py): the fit and the ECE on
synthetic scores whose calibration is known, then through the export, the engine and `evaluate`
on the session's tiny bundles (fixtures in conftest)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import TASK_ARCH, demo_files
from export.calibration import (
    MIN_POOLED,
    CalibrationResult,
    calibrate,
    calibrate_by_reading,
    ece_floor,
    expected_calibration_error,
    fit_temperature,
    nll,
    reliability,
    reliability_diagram,
    softmax,
)
from textcls.cli import app

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


def calibrated_sample(n: int = 4000, classes: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits) itself: calibrated by construction (T = 1)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, size=(n, classes))
    probs = softmax(logits)
    labels = (rng.random(n)[:, None] > np.cumsum(probs, axis=1)).sum(axis=1)
    return logits, labels


# --- the method, on synthetic scores ----------------------------------------------------------

def test_the_fit_recovers_a_known_temperature():
    logits, labels = calibrated_sample()
    assert fit_temperature(logits, labels) == pytest.approx(1.0, rel=0.08)
    # logits three times too large: over-confident; dividing by T = 3 undoes it
    assert fit_temperature(3 * logits, labels) == pytest.approx(3.0, rel=0.08)
    assert fit_temperature(logits / 2, labels) == pytest.approx(0.5, rel=0.08)


def test_the_ece_of_over_confident_scores_is_large_and_falls_after_the_fit():
    logits, labels = calibrated_sample()
    over = 3 * logits
    assert expected_calibration_error(softmax(over), labels) > 0.1
    result = calibrate(over, labels)
    assert isinstance(result, CalibrationResult)
    assert result.ece_before == pytest.approx(expected_calibration_error(softmax(over), labels))
    assert result.ece_after < 0.03 and result.ece_before > 0.1
    assert result.nll_after < result.nll_before
    assert result.nll_after == pytest.approx(nll(over, labels, result.temperature))
    assert (result.n, result.bins, result.at_bound) == (len(labels), 15, False)
    # a temperature never changes a label
    assert (softmax(over, result.temperature).argmax(1) == over.argmax(1)).all()
    assert json.loads(json.dumps(result.to_dict()))["temperature"] == result.temperature


def test_the_ece_of_calibrated_scores_is_small():
    logits, labels = calibrated_sample()
    assert expected_calibration_error(softmax(logits), labels) < 0.03


def test_the_ece_is_the_binned_gap_between_accuracy_and_score():
    # 10 texts all scored 0.9: 9 right is perfect, 5 right is 0.4 off
    probs = np.tile([0.9, 0.1], (10, 1))
    assert expected_calibration_error(probs, np.array([0] * 9 + [1])) == pytest.approx(0.0)
    assert expected_calibration_error(probs, np.array([0] * 5 + [1] * 5)) == pytest.approx(0.4)
    # two bins: 0.6 (2 of 4 right, gap 0.1) and 0.95 (4 of 4 right, gap 0.05), weighted by count
    probs = np.array([[0.6, 0.4]] * 4 + [[0.05, 0.95]] * 4)
    labels = np.array([0, 0, 1, 1, 1, 1, 1, 1])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.5 * 0.1 + 0.5 * 0.05)
    table = reliability(probs, labels)
    assert len(table) == 15 and sum(row["count"] for row in table) == 8
    filled = [row for row in table if row["count"]]
    assert [(row["count"], row["confidence"], row["accuracy"]) for row in filled] == [
        (4, pytest.approx(0.6), 0.5), (4, pytest.approx(0.95), 1.0)]
    assert all(row["lower"] < row["confidence"] <= row["upper"] for row in filled)
    assert table[0]["confidence"] is None and table[0]["accuracy"] is None


def test_the_reliability_diagram_writes_a_png(tmp_path):
    logits, labels = calibrated_sample(n=500)
    t = fit_temperature(3 * logits, labels)
    two = reliability_diagram(softmax(3 * logits), softmax(3 * logits, t), labels, tmp_path / "a" / "r.png",
                              "synthetic")
    one = reliability_diagram(softmax(logits), None, labels, tmp_path / "one.png", "synthetic, one panel")
    for path in (two, one):
        data = path.read_bytes()
        assert data.startswith(PNG) and len(data) > 5000


@pytest.mark.parametrize("logits, labels, message", [
    (np.zeros((1, 3)), [0], "at least 2 labelled texts"),
    (np.array([[0.0, np.nan], [1.0, 0.0], [0.0, 1.0]]), [0, 0, 1], "1 of 3 texts have non-finite"),
    (np.array([[0.0, np.inf], [1.0, 0.0]]), [0, 0], "non-finite"),
    (np.zeros(4), [0, 1, 0, 1], r"\(texts, classes\) array"),
    (np.zeros((4, 1)), [0, 0, 0, 0], "at least 2 classes"),
    (np.zeros((4, 2)), [0, 1, 0], "one label id per text"),
    (np.zeros((4, 2)), [0, 1, 2, 0], r"must lie in \[0, 2\)"),
    (np.zeros((4, 2)), [0.0, 1.0, 0.0, 1.0], "must be integers"),
])
def test_the_fit_refuses_what_it_cannot_calibrate(logits, labels, message):
    with pytest.raises(ValueError, match=message):
        fit_temperature(logits, np.asarray(labels))


@pytest.mark.parametrize("probs, labels, bins, message", [
    (np.array([[2.0, -1.0], [0.0, 1.0]]), [0, 1], 15, r"probabilities in \[0, 1\]"),
    (np.array([[0.2, 0.2], [0.5, 0.5]]), [0, 1], 15, "must sum to 1"),
    (np.array([[np.nan, 0.5], [0.5, 0.5]]), [0, 1], 15, "finite"),
    (np.zeros((0, 2)), [], 15, "no texts"),
    (np.array([[0.5, 0.5]]), [0], 0, "bins must be a positive integer"),
    (np.array([[0.5, 0.5]]), [0, 1], 15, "one label id per text"),
])
def test_the_ece_refuses_what_is_not_scores(probs, labels, bins, message):
    with pytest.raises(ValueError, match=message):
        expected_calibration_error(probs, np.asarray(labels, dtype=np.int64), bins)
    with pytest.raises(ValueError, match=message):
        reliability(probs, np.asarray(labels, dtype=np.int64), bins)


def test_texts_read_through_windows_get_their_own_temperature():
    # one-window texts twice as confident as they should be; pooled texts half as confident
    logits, labels = calibrated_sample(n=3000)
    windows = np.where(np.arange(3000) % 3 == 0, 3, 1)
    scaled = np.where((windows > 1)[:, None], logits / 2, logits * 2)
    fit = calibrate_by_reading(scaled, labels, windows)
    assert fit.temperature == pytest.approx(2.0, rel=0.1)
    assert fit.window_temperature == pytest.approx(0.5, rel=0.1)
    assert fit.pooled.n == 1000 and fit.one.n == 2000
    # one temperature for both readings is worse for both
    single = fit_temperature(scaled, labels)
    assert 0.5 < single < 2.0
    for rows, t in ((windows > 1, fit.window_temperature), (windows == 1, fit.temperature)):
        assert nll(scaled[rows], labels[rows], t) < nll(scaled[rows], labels[rows], single)


def test_too_few_texts_read_through_windows_share_the_one_window_temperature():
    logits, labels = calibrated_sample(n=1000)
    windows = np.ones(1000, dtype=int)
    windows[: MIN_POOLED - 1] = 2
    fit = calibrate_by_reading(3 * logits, labels, windows)
    assert fit.pooled is None and fit.window_temperature == fit.temperature and fit.one.n == 1000
    assert fit.temperature == pytest.approx(3.0, rel=0.1)
    assert calibrate_by_reading(3 * logits, labels, windows, min_pooled=MIN_POOLED - 1).pooled is not None


def test_texts_all_read_through_windows_get_one_temperature():
    logits, labels = calibrated_sample(n=400)
    windows = np.full(400, 3)
    windows[0] = 1  # one text alone cannot be fitted apart
    fit = calibrate_by_reading(logits / 2, labels, windows)
    assert fit.pooled is None and fit.one.n == 400
    assert fit.window_temperature == fit.temperature == pytest.approx(0.5, rel=0.15)


@pytest.mark.parametrize("windows", [[1, 1, 1], [1, 1, 0, 1]])
def test_the_reading_fit_refuses_bad_window_counts(windows):
    logits, labels = calibrated_sample(n=4)
    with pytest.raises(ValueError, match="a window count of at least 1 per text"):
        calibrate_by_reading(logits, labels, windows)


def test_the_ece_floor_is_what_a_calibrated_model_shows_and_shrinks_with_more_texts():
    small, large = calibrated_sample(n=500, seed=1), calibrated_sample(n=8000, seed=1)
    floor_small, floor_large = ece_floor(softmax(small[0])), ece_floor(softmax(large[0]))
    assert floor_large["mean"] < floor_small["mean"] / 2  # the bias falls about as 1 / sqrt(n)
    assert floor_small["mean"] <= floor_small["p90"] and floor_small["draws"] == 400
    # a calibrated model's ECE is of the floor's size; an over-confident one's far above it
    assert expected_calibration_error(softmax(small[0]), small[1]) < 2 * floor_small["p90"]
    assert expected_calibration_error(softmax(3 * small[0]), small[1]) > 3 * floor_small["p90"]
    assert ece_floor(softmax(small[0])) == floor_small  # seeded: the same figure every time


def test_a_degenerate_fit_says_it_hit_the_bound():
    # every text right by a wide margin: the likelihood keeps rising as T falls
    logits = np.array([[5.0, 0.0], [0.0, 5.0]] * 10)
    labels = np.array([0, 1] * 10)
    result = calibrate(logits, labels)
    assert result.at_bound and result.temperature == pytest.approx(0.05, rel=1e-2)


def test_the_export_turns_a_calibration_failure_into_a_user_error(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from core.errors import UserError
    from export import bundle_export
    from engine.engine import BatchResult
    from train.data import LabelledData

    class NaNEngine:  # a model whose outputs are not numbers
        def __init__(self, *args, **kwargs):
            pass

        def run(self, texts):
            return BatchResult(predictions=[], logits=np.full((len(texts), 2), np.nan, np.float32),
                               windows=[1] * len(texts))

    monkeypatch.setattr(bundle_export, "Engine", NaNEngine)
    bundle = SimpleNamespace(labels=["negative", "positive"], task="sentiment")
    data = LabelledData(texts=["a", "b", "c"], labels=["negative", "positive", "negative"], source="dev.csv")
    config = bundle_export.ExportConfig(checkpoint=tmp_path, task="sentiment")
    with pytest.raises(UserError, match="cannot calibrate the int8 variant's scores on dev.csv: 3 of 3 texts "
                                        "have non-finite.*--no-calibrate"):
        bundle_export._calibration(bundle, "int8", [data], config, tmp_path, lambda msg: None)
    assert not (tmp_path / bundle_export.CALIBRATION_PLOT).exists()


# --- through the export, the engine and `evaluate` ---------------------------------------------

@pytest.mark.parametrize("task", sorted(TASK_ARCH))
def test_the_export_fits_the_served_variants_temperature(tiny_manifests, tiny_bundles, task):
    from engine.bundle import TOKENIZER, Bundle
    from train.data import load_labelled

    manifest = tiny_manifests[task]
    calibration = manifest["calibration"]
    dev = demo_files(task)[1]
    assert calibration["variant"] == manifest["cpu_variant"]
    assert calibration["fitted_on"] == [load_labelled(dev).source]
    assert calibration["n"] == len(load_labelled(dev)) and calibration["bins"] == 15
    assert calibration["temperature"] != 1.0 and 0.05 <= calibration["temperature"] <= 20
    assert calibration["nll_after"] <= calibration["nll_before"]
    assert 0 <= calibration["ece_after"] <= 1 and 0 <= calibration["ece_before"] <= 1
    assert manifest["timings"]["calibration_seconds"] >= 0

    bundle = Bundle.load(tiny_bundles[task])  # the stored copy: what the service reads
    assert bundle.temperature == calibration["temperature"]
    # the demo dev texts all fit in one window: texts read through windows share the temperature
    assert calibration["n_windows"] == 0 and bundle.window_temperature == bundle.temperature
    assert 0 < calibration["ece_floor"] < 0.2
    plot = bundle.path / calibration["plot"]
    assert plot.read_bytes().startswith(PNG)
    # the plot is written after the file hashes: not among them, and the served files still verify
    assert calibration["plot"] not in bundle.file_hashes
    assert bundle.verify([bundle.variants[manifest["cpu_variant"]]["file"], TOKENIZER])


@pytest.mark.parametrize("task", sorted(TASK_ARCH))
def test_the_engine_serves_calibrated_scores_with_the_same_labels(tiny_bundles, task):
    from engine.bundle import Bundle
    from engine.engine import Engine
    from train.data import load_labelled

    bundle = Bundle.load(tiny_bundles[task])
    texts = load_labelled(demo_files(task)[1]).texts[:48]
    served = Engine(bundle, device="cpu").run(texts)
    plain = Engine(bundle, device="cpu", calibrated=False).run(texts)
    t = bundle.temperature
    assert [p.label for p in served.predictions] == [p.label for p in plain.predictions]
    np.testing.assert_allclose(served.logits, plain.logits)  # logits stay raw
    served_scores = np.array([p.score for p in served.predictions])
    plain_scores = np.array([p.score for p in plain.predictions])
    np.testing.assert_allclose(served_scores, softmax(served.logits, t).max(axis=1), rtol=1e-5)
    np.testing.assert_allclose(plain_scores, softmax(plain.logits).max(axis=1), rtol=1e-5)
    # T > 1 softens every score, T < 1 sharpens it
    assert ((served_scores < plain_scores) if t > 1 else (served_scores > plain_scores)).mean() > 0.9


def test_the_engine_divides_texts_read_through_windows_by_their_own_temperature(tiny_bundles, tmp_path):
    import shutil

    from engine.bundle import MANIFEST, Bundle
    from engine.engine import Engine

    path = tmp_path / "b"
    shutil.copytree(tiny_bundles["sentiment"], path)
    manifest = json.loads((path / MANIFEST).read_text())
    manifest["long_texts"] = {"rule": "chunk", "max_windows": 4, "overlap": 4}
    manifest["calibration"].update(temperature=0.5, window_temperature=4.0)
    (path / MANIFEST).write_text(json.dumps(manifest))
    bundle = Bundle.load(path)
    assert (bundle.temperature, bundle.window_temperature) == (0.5, 4.0)
    texts = ["a fine film", " ".join(["a fine film and a dull one"] * 40)]
    served = Engine(bundle, device="cpu").run(texts)
    assert served.windows[0] == 1 and served.windows[1] > 1
    scores = np.array([[p.scores[label] for label in bundle.labels] for p in served.predictions])
    np.testing.assert_allclose(scores[0], softmax(served.logits[:1], 0.5)[0], rtol=1e-5)
    np.testing.assert_allclose(scores[1], softmax(served.logits[1:], 4.0)[0], rtol=1e-5)


@pytest.mark.parametrize("value", [0, -1.0, "2", True, None])
def test_a_manifest_with_an_invalid_window_temperature_is_a_bundle_error(tiny_bundles, tmp_path, value):
    import shutil

    from engine.bundle import MANIFEST, Bundle, BundleError

    path = tmp_path / "b"
    shutil.copytree(tiny_bundles["topic"], path)
    manifest = json.loads((path / MANIFEST).read_text())
    manifest["calibration"]["window_temperature"] = value
    (path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="calibration window_temperature .* must be a positive number"):
        Bundle.load(path).window_temperature


@pytest.mark.parametrize("min_pooled", [10, None])
def test_the_export_fits_on_several_calibration_files_with_a_temperature_per_reading(
        tiny_checkpoints, tmp_path, monkeypatch, min_pooled):
    """Short texts and long ones (read through windows under chunk) fitted together: one
    temperature each when there are enough texts read through windows (min_pooled 10), one for
    both with a note when there are not (the default 100), figures per file, and the engine
    serves the ECE the export reports."""
    from export import bundle_export
    from engine.bundle import Bundle
    from train.data import load_labelled

    dev = load_labelled(demo_files("sentiment")[1])
    long_file = tmp_path / "long.csv"
    long_rows = [(" ".join([text] * 12), label) for text, label in zip(dev.texts[:40], dev.labels[:40])]
    long_file.write_text("text,label\n" + "".join(f'"{t}",{label}\n' for t, label in long_rows))
    if min_pooled:
        monkeypatch.setattr(bundle_export, "MIN_POOLED", min_pooled)
    result = runner.invoke(app, ["export", str(tiny_checkpoints["sentiment"]), "--task", "sentiment",
                                 "--variants", "fp32", "--no-save", "--output", str(tmp_path / "b"),
                                 "--long-texts", "chunk", "--eval-data", demo_files("sentiment")[1],
                                 "--calibration-data", demo_files("sentiment")[1],
                                 "--calibration-data", str(long_file)])
    assert result.exit_code == 0, result.output
    calibration = Bundle.load(tmp_path / "b").manifest.calibration.to_dict()
    sources = [dev.source, load_labelled(str(long_file)).source]
    assert calibration["fitted_on"] == sources and calibration["n"] == len(dev) + 40
    files = calibration["files"]
    assert files[sources[1]]["n_windows"] == 40  # every long text read through windows
    assert files[sources[0]]["n_windows"] < len(dev) / 2  # most short ones in one window
    assert calibration["n_windows"] == files[sources[0]]["n_windows"] + 40 < 100
    assert sources[1] in result.output
    if min_pooled:
        assert calibration["window_temperature"] != calibration["temperature"]
        assert "read through several windows" in result.output and "window_note" not in calibration
    else:
        assert calibration["window_temperature"] == calibration["temperature"]
        assert "one temperature serves both" in calibration["window_note"]
        assert "one temperature serves both" in result.output

    out = tmp_path / "report"
    result = runner.invoke(app, ["evaluate", str(tmp_path / "b"), "--data", str(long_file), "--output", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["window_temperature"] == calibration["window_temperature"]
    assert report["ece"] == pytest.approx(calibration["files"][sources[1]]["ece_after"], abs=1e-4)


def test_the_export_refuses_a_calibration_file_it_cannot_read(tiny_checkpoints, tmp_path):
    unlabelled = tmp_path / "unlabelled.csv"
    unlabelled.write_text("text\nA fine film.\n")
    for path, message in ((tmp_path / "missing.csv", "missing.csv"), (unlabelled, "label")):
        result = runner.invoke(app, ["export", str(tiny_checkpoints["sentiment"]), "--task", "sentiment",
                                     "--variants", "fp32", "--no-save", "--output", str(tmp_path / "b"),
                                     "--calibration-data", str(path)])
        assert result.exit_code == 2, result.output
        assert message in result.output
        assert not (tmp_path / "b").exists()  # refused before any work


def test_evaluate_reports_the_ece_of_the_served_scores(tiny_bundles, tiny_manifests, tmp_path):
    task = "sentiment"
    out = tmp_path / "report"
    result = runner.invoke(app, ["evaluate", str(tiny_bundles[task]), "--data", demo_files(task)[1],
                                 "--output", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads([line for line in result.stdout.splitlines() if line.startswith("{")][-1])
    calibration = tiny_manifests[task]["calibration"]
    # the same texts, variant and batches as the export's fit: the same figure
    assert summary["ece"] == pytest.approx(calibration["ece_after"], abs=1e-4)
    report = json.loads((out / "report.json").read_text())
    assert report["temperature"] == calibration["temperature"]
    assert report["ece_uncalibrated"] == pytest.approx(calibration["ece_before"], abs=1e-4)
    assert sum(row["count"] for row in report["reliability"]) == report["n"]
    assert (out / "reliability.png").read_bytes().startswith(PNG)
    assert "![reliability diagram](reliability.png)" in (out / "report.md").read_text()


def test_the_export_summary_prints_the_temperature_and_the_ece(tiny_manifests, capsys):
    from textcls import cli

    cli._print_variants(tiny_manifests["sentiment"])
    err = capsys.readouterr().err
    calibration = tiny_manifests["sentiment"]["calibration"]
    assert f"temperature {calibration['temperature']:.3f}" in err
    assert f"ECE {100 * calibration['ece_before']:.1f}% -> {100 * calibration['ece_after']:.1f}%" in err


@pytest.mark.parametrize("extra, reason", [
    ([], "no --eval-data or --calibration-data: not calibrated"),
    (["--eval-data", demo_files("sentiment")[1], "--no-calibrate"], "--no-calibrate"),
])
def test_without_eval_data_or_with_no_calibrate_the_temperature_is_1(tiny_checkpoints, tmp_path, extra, reason):
    from engine.bundle import Bundle

    result = runner.invoke(app, ["export", str(tiny_checkpoints["sentiment"]), "--task", "sentiment",
                                 "--variants", "fp32", "--no-save", "--output", str(tmp_path / "b"), *extra])
    assert result.exit_code == 0, result.output
    bundle = Bundle.load(tmp_path / "b")
    assert bundle.manifest.calibration.to_dict() == {"temperature": 1.0, "window_temperature": 1.0,
                                                     "fitted_on": None, "reason": reason}
    assert bundle.temperature == 1.0
    assert not (tmp_path / "b" / "calibration.png").exists()
    assert "scores not calibrated (temperature 1.0)" in result.output


def test_the_export_refuses_to_calibrate_on_one_text(tiny_checkpoints, tmp_path):
    one = tmp_path / "one.csv"
    one.write_text("text,label\nA fine film.,positive\n")
    result = runner.invoke(app, ["export", str(tiny_checkpoints["sentiment"]), "--task", "sentiment",
                                 "--eval-data", str(one), "--no-save", "--output", str(tmp_path / "b")])
    assert result.exit_code == 2, result.output
    assert "needs at least 2" in result.output and "--no-calibrate" in result.output
    assert not (tmp_path / "b").exists()  # refused before any work


def test_a_fit_at_the_bound_is_recorded_but_not_applied(tiny_bundles, monkeypatch, tmp_path):
    """The demo models get every demo dev text right: the NLL keeps falling as T -> 0, and T = 0.05
    would turn every served score into 1.0."""
    from dataclasses import replace

    from export import bundle_export, calibration
    from engine.bundle import Bundle
    from train.data import load_labelled

    real = calibration.calibrate
    monkeypatch.setattr(calibration, "calibrate",
                        lambda *a, **k: replace(real(*a, **k), temperature=calibration.T_MIN, at_bound=True))
    bundle = Bundle.load(tiny_bundles["topic"])
    config = bundle_export.ExportConfig(checkpoint=tmp_path, task="topic")
    entry = bundle_export._calibration(bundle, bundle.cpu_variant,
                                       [load_labelled(demo_files("topic")[1])], config, tmp_path, lambda m: None)
    assert entry["temperature"] == 1.0 and entry["fitted_temperature"] == calibration.T_MIN
    assert (entry["ece_after"], entry["nll_after"]) == (entry["ece_before"], entry["nll_before"])
    assert "not applied" in entry["note"]
