"""The serving engine on tiny exported bundles: ordering, padding, truncation, probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from engine.bundle import Bundle, BundleError, resolve_bundle
from engine.engine import Engine

TEXTS = [
    "a wonderful, moving film",
    "dull",
    "The plot made no sense and the acting was wooden; I left before the end of this mess.",
    "Markets rallied as tech shares climbed",
    "ok",
]


@pytest.fixture(scope="module", params=["sentiment", "topic"])
def engine(request, tiny_bundles):
    return Engine(Bundle.load(tiny_bundles[request.param]), device="cpu", batch_tokens=32)


@pytest.mark.parametrize("task", ["sentiment", "topic"])
def test_answers_come_back_in_input_order(tiny_bundles, task):
    # fp32: dynamic int8 picks its activation scale per tensor, so its logits move a little with
    # the batch a text shares (labels agree; see the next tests); fp32 must not move at all.
    engine = Engine(Bundle.load(tiny_bundles[task]), variant="fp32", device="cpu", batch_tokens=32)
    together = engine.logits(TEXTS)
    alone = np.concatenate([engine.logits([t]) for t in TEXTS])
    # each text alone has no padding; in a sorted, padded sub-batch it must score the same,
    # which also proves the padding id and attention mask are right (RoBERTa pads with 1)
    np.testing.assert_allclose(together, alone, atol=1e-4)


def test_the_served_variant_labels_do_not_depend_on_batch_neighbours(engine):
    together = [p.label for p in engine.predict(TEXTS)]
    alone = [engine.predict([t])[0].label for t in TEXTS]
    assert together == alone


def test_probabilities_are_a_distribution_over_the_labels(engine):
    for p in engine.predict(TEXTS):
        assert set(p.scores) == set(engine.labels)
        assert sum(p.scores.values()) == pytest.approx(1.0, abs=1e-5)
        assert p.label == max(p.scores, key=p.scores.get) and p.score == p.scores[p.label]


def test_batch_result_counts_tokens_and_truncation(engine):
    long_text = "word " * (engine.bundle.max_length * 3)
    result = engine.run(["short one", long_text])
    assert result.truncated == [False, True]
    assert result.tokens <= result.padded_tokens
    assert result.tokens <= 2 + 2 * engine.bundle.max_length
    assert result.tokenize_seconds >= 0 and result.inference_seconds > 0
    assert engine.run([]).predictions == []


def test_every_cpu_variant_agrees_with_fp32(tiny_bundles):
    bundle = Bundle.load(tiny_bundles["sentiment"])
    reference = Engine(bundle, variant="fp32", device="cpu").predict(TEXTS)
    for variant in ("optimized", "int8"):
        other = Engine(bundle, variant=variant, device="cpu").predict(TEXTS)
        assert [p.label for p in other] == [p.label for p in reference], variant


def test_the_default_variant_is_the_bundles_cpu_variant(tiny_bundles):
    from engine.options import EngineOptions, open_engine

    engine = open_engine("topic", EngineOptions(device="cpu"))
    assert engine.variant == engine.bundle.cpu_variant
    assert engine.provider == "CPUExecutionProvider"


def test_bundle_errors_say_what_to_do(tmp_path, tiny_bundles):
    with pytest.raises(BundleError, match="textcls export"):
        resolve_bundle("no-such-task")
    with pytest.raises(BundleError, match="no manifest.json"):
        Bundle.load(tmp_path)
    with pytest.raises(BundleError, match="has no variant 'int4'"):
        Engine(Bundle.load(tiny_bundles["topic"]), variant="int4", device="cpu")
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(BundleError, match="CUDAExecutionProvider"):
            Engine(Bundle.load(tiny_bundles["topic"]), device="cuda")


# --- long texts: the bundle's rule, or the one the engine is given ------------------------------

LONG_HEAD = ("The film opens slowly and the first hour is dull, the acting wooden and the plot hard "
             "to follow. Markets rallied as tech shares climbed. ") * 10
LONG_ENDS = ("But the ending is wonderful, moving and beautifully acted; a great film.",
             "And the ending is a mess: boring, stupid and far too long. Awful.")


def rule_engine(bundle_dir, rule: str, **kwargs) -> Engine:
    """The fp32 variant (its logits do not move with the batch a text shares; int8's do, a little)
    reading long texts by ``rule``."""
    from engine.long_texts import LongTextRule

    return Engine(Bundle.load(bundle_dir), variant="fp32", device="cpu", threads=1,
                  long_texts=LongTextRule(rule, **kwargs))


@pytest.mark.parametrize("task", ["sentiment", "topic"])
def test_chunk_averages_the_logits_of_the_windows(tiny_bundles, task):
    engine = rule_engine(tiny_bundles[task], "chunk", max_windows=6, overlap=8)
    text = LONG_HEAD + LONG_ENDS[0]
    encoding = engine.tokenizer.encode(text)
    assert len(encoding.ids) > 4 * engine.bundle.max_length  # several hundred tokens
    result = engine.run([text])
    assert result.windows == [6] and result.truncated == [True]  # 6 windows cannot cover it all
    rows, owners, truncated, windows = engine.read([encoding])
    assert len(rows) == 6 and list(owners) == [0] * 6 and windows == [6] and truncated == [True]
    assert all(len(row) == engine.bundle.max_length for row in rows)
    assert all(row[0] == encoding.ids[0] and row[-1] == encoding.ids[-1] for row in rows)  # specials
    one_by_one = [engine.session.run(None, engine.feed([row], len(row)))[0][0] for row in rows]
    np.testing.assert_allclose(result.logits[0], np.mean(one_by_one, axis=0), atol=1e-5)
    assert not np.allclose(one_by_one[0], one_by_one[-1], atol=1e-3)  # the windows do differ

    # enough windows: every token is read
    covering = rule_engine(tiny_bundles[task], "chunk", max_windows=100, overlap=8).run([text])
    assert covering.windows[0] > 6 and covering.truncated == [False]


@pytest.mark.parametrize("task", ["sentiment", "topic"])
def test_the_rule_leaves_short_texts_alone(tiny_bundles, task):
    truncate = rule_engine(tiny_bundles[task], "truncate").run(TEXTS)
    for rule in ("chunk", "head_tail"):
        other = rule_engine(tiny_bundles[task], rule).run(TEXTS)
        assert other.windows == [1] * len(TEXTS) and other.truncated == [False] * len(TEXTS)
        np.testing.assert_array_equal(other.logits, truncate.logits)
        assert (other.tokens, other.padded_tokens) == (truncate.tokens, truncate.padded_tokens)


@pytest.mark.parametrize("task", ["sentiment", "topic"])
def test_head_tail_reads_the_end_that_truncate_drops(tiny_bundles, task):
    texts = [LONG_HEAD + end for end in LONG_ENDS]  # the same first hundreds of tokens
    truncate = rule_engine(tiny_bundles[task], "truncate").run(texts)
    np.testing.assert_allclose(truncate.logits[0], truncate.logits[1], atol=1e-6)
    head_tail = rule_engine(tiny_bundles[task], "head_tail", head=16)
    result = head_tail.run(texts)
    assert result.windows == [1, 1] and result.truncated == [True, True]
    assert np.abs(result.logits[0] - result.logits[1]).max() > 1e-3
    assert np.abs(result.logits[0] - truncate.logits[0]).max() > 1e-3
    # its one window: 16 tokens from the start, the rest from the end, the specials in place
    encoding = head_tail.tokenizer.encode(texts[0])
    (row,), *_ = head_tail.read([encoding])
    room = head_tail.bundle.max_length - 2
    assert row == [encoding.ids[0], *encoding.ids[1:17], *encoding.ids[-1 - (room - 16):-1], encoding.ids[-1]]


@pytest.mark.parametrize("task", ["sentiment", "topic"])
def test_answers_come_back_in_input_order_with_long_and_short_texts_mixed(tiny_bundles, task):
    engine = rule_engine(tiny_bundles[task], "chunk", max_windows=3)
    engine.batch_tokens = 200  # windows of different texts share calls, and short texts join them
    texts = [TEXTS[0], LONG_HEAD + LONG_ENDS[0], TEXTS[1], LONG_HEAD[:400], TEXTS[2],
             LONG_HEAD + LONG_ENDS[1], TEXTS[3]]
    result = engine.run(texts)
    assert result.windows == [1, 3, 1, 3, 1, 3, 1]
    alone = [engine.run([t]) for t in texts]
    np.testing.assert_allclose(result.logits, np.concatenate([r.logits for r in alone]), atol=1e-4)
    assert [p.label for p in result.predictions] == [r.predictions[0].label for r in alone]
    assert result.truncated == [r.truncated[0] for r in alone]


def test_padded_tokens_count_every_window(tiny_bundles):
    from engine.engine import token_batches

    engine = rule_engine(tiny_bundles["sentiment"], "chunk", max_windows=4)
    max_length = engine.bundle.max_length
    texts = [LONG_HEAD, "short one", LONG_HEAD[:400], "ok"]
    sizes = [len(engine.tokenizer.encode(t).ids) for t in texts]
    assert sizes[0] > 4 * max_length and 2 * max_length < sizes[2] < 3 * max_length
    assert sizes[1] < max_length and sizes[3] < max_length
    rows, _, _, windows = engine.read(engine.tokenizer.encode_batch(texts))
    assert windows == [4, 1, 4, 1]
    lengths = np.array([len(r) for r in rows])
    # each window of a long text is max_length tokens, its specials included
    assert lengths.sum() == 8 * max_length + sizes[1] + sizes[3]
    order = np.argsort(lengths, kind="stable")
    for batch_tokens in (1, 100, 10_000):
        engine.batch_tokens = batch_tokens
        result = engine.run(texts)
        assert result.windows == windows and result.tokens == lengths.sum()
        expected = sum(len(lengths[order[s]]) * int(lengths[order[s]].max())
                       for s in token_batches(lengths[order], batch_tokens))
        assert result.padded_tokens == expected >= result.tokens
        if batch_tokens == 1:  # every window alone: no padding at all
            assert result.padded_tokens == result.tokens
        if batch_tokens == 10_000:  # one call: every row padded to max_length
            assert result.padded_tokens == len(rows) * max_length == 10 * max_length


def test_an_invalid_long_texts_entry_stops_the_engine(tiny_bundles, tmp_path):
    import json
    import shutil

    bundle_dir = tmp_path / "bundle"
    shutil.copytree(tiny_bundles["sentiment"], bundle_dir)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    manifest["long_texts"] = {"rule": "chunk", "max_windows": 0}
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="invalid long_texts entry: max_windows must be at least 1"):
        Engine(Bundle.load(bundle_dir), device="cpu")


# --- the one window averaging and the one tempered softmax (engine/scores.py) ------------------

def test_average_windows_takes_the_mean_of_each_texts_windows():
    from engine.scores import average_windows

    window_logits = np.array([[1, 2], [3, 4], [10, 0], [5, 6]], dtype=np.float32)
    pooled = average_windows(window_logits, [0, 0, 1, 0], texts=2)
    np.testing.assert_allclose(pooled, [[3, 4], [10, 0]])
    assert pooled.dtype == np.float32  # what ONNX Runtime gives stays what the engine returns
    one_each = average_windows(window_logits[:2], [1, 0], texts=2)  # one window per text, any order
    np.testing.assert_array_equal(one_each, [[3, 4], [1, 2]])
    with pytest.raises(ValueError, match="needs at least one window"):
        average_windows(window_logits, [0, 0, 0, 0], texts=2)
    with pytest.raises(ValueError, match="needs at least one window"):
        average_windows(window_logits, [0, 1, 2, 2], texts=2)


def test_softmax_divides_by_one_temperature_or_one_per_text():
    from engine.scores import softmax

    logits = np.array([[2.0, 0.0], [1000.0, 0.0]])  # the second would overflow a naive exp
    plain = softmax(logits)
    np.testing.assert_allclose(plain.sum(axis=1), 1.0)
    np.testing.assert_allclose(plain[0], [np.exp(2) / (np.exp(2) + 1), 1 / (np.exp(2) + 1)])
    np.testing.assert_allclose(softmax(logits, 2.0)[0], softmax(logits / 2)[0])
    per_text = softmax(logits, np.array([2.0, 500.0]))
    np.testing.assert_allclose(per_text, softmax(np.array([[1.0, 0.0], [2.0, 0.0]])))
