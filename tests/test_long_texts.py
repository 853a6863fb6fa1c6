"""The long-text rule (engine/long_texts.py): what the model reads of a text over max_length tokens.

Unit tests on synthetic special-token masks first (no model); then, on the tiny checkpoints and
bundles of conftest, the PyTorch scorer against the fp32 ONNX engine under each rule, and training
(`encode_dataset`, textcls_train.json) under chunk and head_tail.
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from itertools import pairwise

import numpy as np
import pytest

from engine.long_texts import RULES, LongTextRule, chunk_starts
from engine.bundle import MANIFEST, TOKENIZER, Bundle, BundleError


# Special-token masks of one tokenized text of `content` tokens, by the tokenizer's template.
def bert_like(content: int) -> list[int]:
    """[CLS] ... [SEP] (and RoBERTa's single text, <s> ... </s>)."""
    return [1] + [0] * content + [1]


def roberta_pair_like(content: int) -> list[int]:
    """<s> ... </s></s>: two closing specials."""
    return [1] + [0] * content + [1, 1]


def no_specials(content: int) -> list[int]:
    return [0] * content


MASKS = {"bert": bert_like, "roberta-pair": roberta_pair_like, "none": no_specials}


def split(mask: list[int]) -> tuple[list[int], list[int], list[int]]:
    """(leading special positions, content positions, trailing special positions)."""
    lead = next(i for i, s in enumerate(mask) if not s)
    trail = next(i for i, s in enumerate(reversed(mask)) if not s)
    n = len(mask)
    return list(range(lead)), list(range(lead, n - trail)), list(range(n - trail, n))


def content_of(window: list[int], mask: list[int]) -> list[int]:
    return [p for p in window if not mask[p]]


def assert_specials_in_place(window: list[int], mask: list[int]) -> None:
    prefix, _, suffix = split(mask)
    assert window[: len(prefix)] == prefix
    assert window[len(window) - len(suffix):] == suffix
    assert not any(mask[p] for p in window[len(prefix): len(window) - len(suffix)])


# --- short texts --------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", sorted(MASKS))
@pytest.mark.parametrize("rule", RULES)
def test_a_text_within_max_length_is_one_window_untouched(shape, rule):
    for content in (1, 5, 13):
        mask = MASKS[shape](content)
        max_length = len(mask) + (content % 3)  # exactly max_length, or shorter
        windows, truncated = LongTextRule(rule=rule, max_windows=2, overlap=3, head=2).windows(mask, max_length)
        assert windows == [list(range(len(mask)))] and truncated is False


# --- truncate and head_tail ---------------------------------------------------------------------

@pytest.mark.parametrize("shape", sorted(MASKS))
def test_truncate_keeps_the_head(shape):
    mask = MASKS[shape](100)
    prefix, content, suffix = split(mask)
    room = 16 - len(prefix) - len(suffix)
    windows, truncated = LongTextRule("truncate").windows(mask, 16)
    assert windows == [prefix + content[:room] + suffix]
    assert len(windows[0]) == 16 and truncated is True


@pytest.mark.parametrize("shape", sorted(MASKS))
@pytest.mark.parametrize("head", [0, 3, 8])
def test_head_tail_keeps_head_tokens_first_and_the_rest_last(shape, head):
    mask = MASKS[shape](100)
    prefix, content, suffix = split(mask)
    windows, truncated = LongTextRule("head_tail", head=head).windows(mask, 16)
    room = 16 - len(prefix) - len(suffix)
    assert len(windows) == 1 and truncated is True
    (window,) = windows
    assert len(window) == 16
    assert_specials_in_place(window, mask)
    assert content_of(window, mask) == content[:head] + content[len(content) - (room - head):]


def test_head_tail_with_a_head_as_large_as_the_room_is_truncate():
    mask = bert_like(100)
    for head in (14, 15, 500):
        assert LongTextRule("head_tail", head=head).windows(mask, 16) == LongTextRule("truncate").windows(mask, 16)


# --- chunk ------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", sorted(MASKS))
@pytest.mark.parametrize("content,overlap", [(17, 0), (40, 4), (41, 4), (70, 9), (100, 15), (100, 13)])
def test_chunk_within_max_windows_covers_every_token_with_overlapping_windows(shape, content, overlap):
    mask = MASKS[shape](content)
    _, tokens, _ = split(mask)
    max_length = 16
    windows, truncated = LongTextRule("chunk", max_windows=100, overlap=overlap).windows(mask, max_length)
    assert len(windows) > 1 and truncated is False
    parts = [content_of(w, mask) for w in windows]
    for window, part in zip(windows, parts):
        assert len(window) == max_length
        assert_specials_in_place(window, mask)
        assert part == list(range(part[0], part[-1] + 1))  # contiguous content
    assert parts[0][0] == tokens[0] and parts[-1][-1] == tokens[-1]  # from the first token to the last
    assert sorted({p for part in parts for p in part}) == tokens  # nothing left out
    room = len(parts[0])
    step_overlap = min(overlap, room - 1)  # an overlap as large as the window: one token apart
    shared = [len(set(a) & set(b)) for a, b in pairwise(parts)]
    assert shared[:-1] == [step_overlap] * (len(shared) - 1)  # the last one is flush with the end:
    assert step_overlap <= shared[-1] < room  # it may share more, never all


@pytest.mark.parametrize("shape", sorted(MASKS))
@pytest.mark.parametrize("max_windows", [2, 3, 5])
def test_chunk_past_max_windows_spreads_them_from_the_first_token_to_the_last(shape, max_windows):
    mask = MASKS[shape](400)
    _, tokens, _ = split(mask)
    rule = LongTextRule("chunk", max_windows=max_windows, overlap=4)
    windows, truncated = rule.windows(mask, 16)
    assert len(windows) == max_windows and truncated is True  # 400 tokens do not fit in 5 x 16
    parts = [content_of(w, mask) for w in windows]
    for window in windows:
        assert len(window) == 16
        assert_specials_in_place(window, mask)
    assert parts[0][0] == tokens[0] and parts[-1][-1] == tokens[-1]
    starts = [part[0] for part in parts]
    steps = np.diff(starts)
    assert steps.max() - steps.min() <= 1  # evenly, up to rounding
    room = len(parts[0])
    assert all(step > room for step in steps)  # gaps between the windows


def test_chunk_past_max_windows_without_gaps_is_not_truncated():
    # 4 windows of room 20 needed at a step of 16 for 60 tokens; 3 spread evenly still touch
    mask = bert_like(60)
    windows, truncated = LongTextRule("chunk", max_windows=3, overlap=4).windows(mask, 22)
    assert len(windows) == 3 and truncated is False
    assert sorted({p for w in windows for p in content_of(w, mask)}) == split(mask)[1]


@pytest.mark.parametrize("shape", sorted(MASKS))
def test_chunk_with_one_window_is_truncate(shape):
    mask = MASKS[shape](100)
    for max_length in (5, 16, 64):
        assert (LongTextRule("chunk", max_windows=1).windows(mask, max_length)
                == LongTextRule("truncate").windows(mask, max_length))


def test_chunk_starts():
    assert chunk_starts(10, 10, 2, 4) == [0]  # fits: one window
    assert chunk_starts(100, 40, 10, 10) == [0, 30, 60]  # the last flush with the end
    assert chunk_starts(100, 40, 0, 10) == [0, 40, 60]
    assert chunk_starts(12, 10, 50, 10) == [0, 1, 2]  # overlap >= room: one token apart
    assert chunk_starts(100, 10, 0, 4) == [0, 30, 60, 90]  # 10 needed: 4 spread evenly
    assert chunk_starts(100, 10, 0, 1) == [0]
    for length in range(1, 200, 7):
        for room in (1, 3, 16):
            for overlap in (0, 2, 20):
                for max_windows in (1, 2, 4, 50):
                    starts = chunk_starts(length, room, overlap, max_windows)
                    assert starts[0] == 0 and len(starts) <= max_windows
                    assert starts == sorted(set(starts))
                    if length > room and max_windows > 1:
                        assert starts[-1] == length - room


def test_the_truncated_flag_says_whether_a_token_was_left_unread():
    for content in range(1, 120, 3):
        mask = bert_like(content)
        for rule in (LongTextRule("truncate"), LongTextRule("head_tail", head=4),
                     *(LongTextRule("chunk", max_windows=m, overlap=o) for m in (1, 2, 4) for o in (0, 5))):
            windows, truncated = rule.windows(mask, 16)
            read = {p for w in windows for p in w}
            assert truncated == (len(read) < len(mask)), (content, rule)
            assert all(len(w) == min(16, len(mask)) for w in windows)


# --- validation and records ---------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,message", [
    ({"rule": "middle"}, "long-text rule must be one of truncate, head_tail, chunk, not 'middle'"),
    ({"rule": "chunk", "max_windows": 0}, "max_windows must be at least 1, not 0"),
    ({"rule": "chunk", "overlap": -1}, "overlap and head must be 0 or more tokens"),
    ({"rule": "head_tail", "head": -3}, "overlap and head must be 0 or more tokens"),
    ({"rule": "chunk", "max_windows": 2.5}, "max_windows must be a whole number"),
    ({"rule": "chunk", "overlap": "8"}, "overlap must be a whole number"),
    ({"rule": "chunk", "max_windows": True}, "max_windows must be a whole number"),
])
def test_invalid_rules_are_refused_with_what_is_allowed(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LongTextRule(**kwargs)
    with pytest.raises(ValueError, match=message):
        LongTextRule.from_dict(kwargs)
    with pytest.raises(ValueError, match=message):
        replace(LongTextRule(), **kwargs)


def test_a_max_length_with_no_room_beside_the_specials_is_refused():
    with pytest.raises(ValueError, match="max_length 2 leaves no room beside the special tokens"):
        LongTextRule("chunk").windows(bert_like(10), 2)


def test_from_dict():
    assert LongTextRule.from_dict(None) == LongTextRule() == LongTextRule.from_dict({})
    assert LongTextRule.from_dict(None).rule == "truncate"
    rule = LongTextRule("chunk", max_windows=3, overlap=8, head=5)
    assert LongTextRule.from_dict(rule.to_dict()) == rule
    assert LongTextRule.from_dict(json.loads(json.dumps(rule.to_dict()))) == rule
    assert LongTextRule.from_dict({"rule": "head_tail"}) == LongTextRule("head_tail")  # defaults
    with pytest.raises(ValueError, match="long_texts must be a mapping"):
        LongTextRule.from_dict("chunk")


def _bundle_dir(tmp_path, long_texts):
    """A format-1 manifest (the version that could leave long_texts out) with ``long_texts``."""
    manifest = {"format_version": 1, "task": "sentiment", "labels": ["negative", "positive"],
                "max_length": 64, "variants": {}}
    if long_texts is not ...:
        manifest["long_texts"] = long_texts
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    (tmp_path / TOKENIZER).write_text("{}")
    return tmp_path


@pytest.mark.parametrize("long_texts", [{"rule": "middle"}, {"rule": "chunk", "max_windows": 0},
                                        {"rule": "chunk", "overlap": -2}, {"max_windows": "4"}, "chunk",
                                        ["chunk"]])
def test_a_manifest_with_an_invalid_long_texts_is_a_bundle_error(tmp_path, long_texts):
    with pytest.raises(BundleError, match="invalid long_texts entry.*re-export the bundle"):
        Bundle.load(_bundle_dir(tmp_path, long_texts))


def test_a_manifest_without_long_texts_reads_them_by_truncate(tmp_path):
    assert Bundle.load(_bundle_dir(tmp_path, ...)).long_texts == LongTextRule()
    chunk = LongTextRule("chunk", max_windows=2)
    assert Bundle.load(_bundle_dir(tmp_path, chunk.to_dict())).long_texts == chunk


# --- the PyTorch scorer and the fp32 ONNX engine read long texts alike --------------------------

LONG = {
    "sentiment": ("The film opens slowly and the first hour is dull, the acting wooden and the plot "
                  "hard to follow. " * 12 + "But the ending is wonderful, moving and beautifully acted."),
    "topic": ("Markets rallied as tech shares climbed and investors bought chip makers. " * 15
              + "The home side won the final in extra time."),
}


@pytest.mark.parametrize("task", ["sentiment", "topic"])  # tiny BERT, tiny RoBERTa
@pytest.mark.parametrize("rule", [LongTextRule("chunk"), LongTextRule("chunk", max_windows=20, overlap=8),
                                  LongTextRule("head_tail", head=16)])
def test_pytorch_and_the_fp32_engine_agree_on_long_texts(tiny_checkpoints, tiny_bundles, task, rule):
    from engine.engine import Engine
    from train.finetune import torch_scorer

    bundle = Bundle.load(tiny_bundles[task])
    engine = Engine(bundle, variant="fp32", device="cpu", long_texts=rule)
    texts = [LONG[task], "a short one", LONG[task][: len(LONG[task]) // 2], "ok"]
    result = engine.run(texts)
    assert result.windows[0] > 1 if rule.rule == "chunk" else result.windows[0] == 1
    assert result.windows[1] == result.windows[3] == 1
    scorer, labels = torch_scorer(tiny_checkpoints[task], bundle.max_length, rule, logits=True)
    assert labels == engine.labels
    reference = scorer(texts)
    assert np.abs(reference - result.logits).max() < 1e-3
    # the rule matters: truncation gives other logits for the long text
    truncated = torch_scorer(tiny_checkpoints[task], bundle.max_length, logits=True)[0](texts)
    assert np.abs(truncated[0] - reference[0]).max() > 1e-3
    np.testing.assert_allclose(truncated[1], reference[1], atol=1e-5)


# --- training -----------------------------------------------------------------------------------

def test_encode_dataset_makes_one_row_per_window_with_the_texts_label(tiny_bases):
    from transformers import AutoTokenizer

    from train.data import LabelledData
    from train.finetune import encode_dataset

    tokenizer = AutoTokenizer.from_pretrained(tiny_bases["bert"])
    long = LONG["sentiment"]
    data = LabelledData([long, "a short one", long], ["positive", "negative", "negative"], "test")
    label2id = {"negative": 0, "positive": 1}
    ids = tokenizer(long)["input_ids"]
    mask = tokenizer(long, return_special_tokens_mask=True)["special_tokens_mask"]
    assert len(ids) > 4 * 32

    chunk = LongTextRule("chunk", max_windows=6, overlap=4)
    ds = encode_dataset(tokenizer, data, label2id, 32, chunk)
    windows, _ = chunk.windows(mask, 32)
    assert len(windows) == 6
    assert ds["label"] == [1] * 6 + [0] + [0] * 6
    assert ds["input_ids"][:6] == [[ids[p] for p in w] for w in windows]
    assert ds["input_ids"][6] == tokenizer("a short one")["input_ids"]
    assert all(len(row) == 32 for row in ds["input_ids"][:6] + ds["input_ids"][7:])
    assert all(row[0] == tokenizer.cls_token_id and row[-1] == tokenizer.sep_token_id for row in ds["input_ids"])
    assert all(m == [1] * len(row) for m, row in zip(ds["attention_mask"], ds["input_ids"]))

    head_tail = encode_dataset(tokenizer, data, label2id, 32, LongTextRule("head_tail", head=10))
    assert len(head_tail) == 3 and head_tail["label"] == [1, 0, 0]
    row = head_tail["input_ids"][0]
    assert row == [ids[0], *ids[1:11], *ids[len(ids) - 1 - 20: len(ids) - 1], ids[-1]] and len(row) == 32

    truncate = encode_dataset(tokenizer, data, label2id, 32)  # the default
    assert truncate["input_ids"][0] == ids[:31] + [ids[-1]]


def test_the_training_record_holds_the_rule_and_the_export_reads_it(tiny_checkpoints, tiny_bases, tmp_path):
    from export.bundle_export import ExportConfig, export_long_texts
    from train.finetune import TRAIN_INFO, TrainConfig, train, trained_long_texts

    # the session's checkpoints: trained with the default rule
    info = json.loads((tiny_checkpoints["sentiment"] / TRAIN_INFO).read_text())
    assert info["config"]["long_texts"] == "truncate"
    assert trained_long_texts(tiny_checkpoints["sentiment"]) == LongTextRule()
    assert trained_long_texts(tmp_path) == LongTextRule()  # no record: truncate

    words = ["good", "bad"]
    rows = [(f"{'a very long review that goes on and on ' * 8 if i % 3 == 0 else ''}it was {words[i % 2]}",
             ["positive", "negative"][i % 2]) for i in range(16)]
    data = tmp_path / "train.csv"
    with data.open("w", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *rows])
    out = tmp_path / "ckpt"
    info = train(TrainConfig(task="sentiment", data=[str(data)], eval_data=str(data), output=out,
                             base_model=str(tiny_bases["bert"]), max_length=16, long_texts="chunk",
                             max_windows=3, window_overlap=2, head_tokens=5, epochs=1, batch_size=16,
                             seed=0, precision="fp32"))
    rule = LongTextRule("chunk", max_windows=3, overlap=2, head=5)
    assert info["train_rows"] == 16 and info["train_inputs"] == 16 + 6 * 2  # 6 long texts, 3 windows each
    recorded = json.loads((out / TRAIN_INFO).read_text())
    assert recorded["config"]["long_texts"] == "chunk" and recorded["train_inputs"] == info["train_inputs"]
    assert (recorded["config"]["max_windows"], recorded["config"]["window_overlap"],
            recorded["config"]["head_tokens"]) == (3, 2, 5)
    assert trained_long_texts(out) == rule
    # the export records the training run's rule unless told otherwise
    assert export_long_texts(out, ExportConfig(checkpoint=out, task="sentiment")) == rule
    assert export_long_texts(out, ExportConfig(checkpoint=out, task="sentiment", long_texts="head_tail",
                                               max_windows=2)) == replace(rule, rule="head_tail", max_windows=2)
