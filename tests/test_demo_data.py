"""The committed demo datasets (train/data/*.csv) and their generator, train.demo_data."""

from __future__ import annotations

import csv
from collections import Counter

import pytest

from train.demo_data import DATA_DIR, SPLIT_SIZES, TASKS, demo_path, generate, main, write

SPLITS = ("train", "dev")
CASES = [(task, split) for task in TASKS for split in SPLITS]
EXPECTED_ROWS = {"train": 600, "dev": 160}


def read_rows(path):
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        return header, [tuple(row) for row in reader]


@pytest.mark.parametrize("task,split", CASES)
def test_committed_file_matches_generator(task, split, tmp_path):
    committed = demo_path(task, split)
    assert committed.is_file(), f"{committed} is missing; run `python -m train.demo_data`"
    fresh = tmp_path / f"{task}_{split}.csv"
    write(task, split, fresh)
    assert fresh.read_bytes() == committed.read_bytes(), (
        f"{committed} is stale; regenerate it with `python -m train.demo_data`"
    )


@pytest.mark.parametrize("task,split", CASES)
def test_file_round_trips_to_generated_rows(task, split):
    header, rows = read_rows(demo_path(task, split))
    assert header == ["text", "label"]
    assert rows == generate(task, split)


@pytest.mark.parametrize("task,split", CASES)
def test_counts_and_exact_balance(task, split):
    _, rows = read_rows(demo_path(task, split))
    labels = TASKS[task]
    assert len(rows) == EXPECTED_ROWS[split] == SPLIT_SIZES[split]
    assert all(len(row) == 2 for row in rows)
    per_class = EXPECTED_ROWS[split] // len(labels)
    assert Counter(label for _, label in rows) == {label: per_class for label in labels}


@pytest.mark.parametrize("task,split", CASES)
def test_no_empty_or_duplicate_texts(task, split):
    _, rows = read_rows(demo_path(task, split))
    texts = [text for text, _ in rows]
    assert all(text.strip() for text in texts)
    assert all(text == text.strip() for text in texts)
    duplicates = [t for t, n in Counter(texts).items() if n > 1]
    assert not duplicates
    # not even up to case and spacing
    assert len({" ".join(t.lower().split()) for t in texts}) == len(texts)


@pytest.mark.parametrize("task", TASKS)
def test_no_train_dev_overlap(task):
    _, train_rows = read_rows(demo_path(task, "train"))
    _, dev_rows = read_rows(demo_path(task, "dev"))
    train_texts = {text for text, _ in train_rows}
    assert not [text for text, _ in dev_rows if text in train_texts]
    normalized = {" ".join(t.lower().split()) for t in train_texts}
    assert not [t for t, _ in dev_rows if " ".join(t.lower().split()) in normalized]


@pytest.mark.parametrize("task,split", CASES)
def test_mix_of_short_and_long_texts(task, split):
    _, rows = read_rows(demo_path(task, split))
    counts = [len(text.split()) for text, _ in rows]
    short = sum(n <= 8 for n in counts) / len(counts)
    long = sum(n >= 60 for n in counts) / len(counts)
    assert short >= 0.2, f"only {short:.0%} short texts"
    assert long >= 0.2, f"only {long:.0%} long texts"
    assert min(counts) >= 3 and max(counts) <= 150
    # every class has both short and long texts, not just the file as a whole
    for label in TASKS[task]:
        mine = [len(text.split()) for text, lab in rows if lab == label]
        assert sum(n <= 8 for n in mine) >= 0.2 * len(mine)
        assert sum(n >= 60 for n in mine) >= 0.2 * len(mine)


@pytest.mark.parametrize("task", TASKS)
def test_texts_are_varied(task):
    """No single word marks a class: each word occurs in well under all of its texts."""
    _, rows = read_rows(demo_path(task, "train"))
    for label in TASKS[task]:
        docs = [set(text.lower().split()) for text, lab in rows if lab == label]
        frequency = Counter(word for doc in docs for word in doc)
        others = [set(text.lower().split()) for text, lab in rows if lab != label]
        other_frequency = Counter(word for doc in others for word in doc)
        for word, n in frequency.items():
            distinctive = n / len(docs) - other_frequency[word] / len(others)
            assert distinctive < 0.6, f"{word!r} marks {n}/{len(docs)} {label!r} texts"


def test_generate_is_deterministic_and_seeded():
    assert generate("topic", "dev") == generate("topic", "dev")
    assert generate("sentiment", "train", seed=1) == generate("sentiment", "train", seed=1)
    assert generate("sentiment", "train", seed=1) != generate("sentiment", "train")


def test_rows_are_text_label_tuples():
    for text, label in generate("sentiment", "dev"):
        assert isinstance(text, str) and label in TASKS["sentiment"]


@pytest.mark.parametrize("task,split", [("nope", "train"), ("topic", "test")])
def test_generate_rejects_unknown_task_or_split(task, split):
    with pytest.raises(ValueError):
        generate(task, split)


def test_demo_path_names():
    assert demo_path("topic", "dev") == DATA_DIR / "topic_dev.csv"
    assert demo_path("sentiment", "train").name == "sentiment_train.csv"
    assert DATA_DIR.name == "data" and DATA_DIR.parent.name == "train"


def test_main_regenerates_all_files_into_out_dir(tmp_path, capsys):
    assert main(["--out-dir", str(tmp_path)]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(f"{task}_{split}.csv" for task, split in CASES)
    for task, split in CASES:
        assert (tmp_path / f"{task}_{split}.csv").read_bytes() == demo_path(task, split).read_bytes()
    assert main(["--out-dir", str(tmp_path), "--check"]) == 0
    (tmp_path / "topic_dev.csv").write_text("text,label\nstale,World\n", encoding="utf-8")
    assert main(["--out-dir", str(tmp_path), "--check"]) == 1
    capsys.readouterr()


def test_help_explains_the_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--out-dir" in out and "demo" in out


def _templates(node):
    """Every template string in a part of demo_templates.json (pools excluded)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _templates(value)
    else:
        for value in node:
            yield from _templates(value)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_slot_has_a_pool_and_every_pool_is_used(task):
    """The word lists live in train/demo_templates.json: a slot with no pool would only fail when
    the generator happens to draw its template, and a pool no template names is dead data."""
    import string

    from train.demo_data import TEMPLATES_FILE, _load_templates

    part = _load_templates(TEMPLATES_FILE)[task]
    texts = {k: v for k, v in part.items() if k not in ("pools", "sticky", "places")}
    # topic stories also fill the place slots, which come from "places", not from a pool
    preset = {"country", "capital", "demonym"} if task == "topic" else set()
    used = set()
    for template in _templates(texts):
        for _, field, _, _ in string.Formatter().parse(template):
            if field:
                name = field[2:] if field.startswith("C_") else field
                used.add(name.rstrip("0123456789"))
    assert used - preset <= set(part["pools"]), sorted(used - preset - set(part["pools"]))
    assert set(part["pools"]) <= used, sorted(set(part["pools"]) - used)
    assert set(part["sticky"]) <= set(part["pools"]) | preset, sorted(set(part["sticky"]) - set(part["pools"]))
