"""The serving engine on tiny exported bundles: ordering, padding, truncation, probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from service.bundle import Bundle, BundleError, resolve_bundle
from service.engine import Engine

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
    engine = Engine.from_ref("topic", device="cpu")
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
