"""Deterministic generator of small *demo* labelled datasets.

The project ships these CSV files (``train/data/*.csv``) so that the default
models can be trained completely offline.  The texts are synthetic: they are
assembled from compositional templates with many slot fillers, so they look
like English movie reviews (task ``sentiment``) and AG-News-style news items
(task ``topic``) while staying small, balanced and byte-identical on every
run.

The word lists and templates are data, in ``demo_templates.json`` beside this
module; the code here is only the generator that fills them in.  Every name of
a film, person, team, company or product in them is made up.

Regenerate the committed files with::

    python -m train.demo_data            # writes train/data/{task}_{split}.csv
    python -m train.demo_data --check    # exit status 1 if they are stale

Only the standard library (and core.tasks, for the label names) is used.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from pathlib import Path

from core.tasks import TASK_LABELS

TASKS = TASK_LABELS  # task -> labels, balanced in every split
SPLITS = ("train", "dev")
SPLIT_SIZES = {"train": 600, "dev": 160}
DEFAULT_SEED = 20240611

DATA_DIR = Path(__file__).parent / "data"

# Word-count ranges (``len(text.split())``) of the three length buckets.
SHORT_WORDS = (3, 8)
MEDIUM_WORDS = (9, 59)
LONG_WORDS = (60, 150)
# Share of each class drawn from the short and from the long bucket.
SHORT_SHARE = 0.3
LONG_SHARE = 0.3

_MAX_ATTEMPTS = 5000


# ---------------------------------------------------------------------------
# Slot filling
# ---------------------------------------------------------------------------


class _Picker:
    """Mapping used with ``str.format_map`` that draws slot values at random.

    ``{actor}`` and ``{actor2}`` draw two *different* values from the pool
    ``actor``.  Names in ``sticky`` (people, titles, teams, companies, ...)
    keep their value for the whole text, so a review talks about one film
    and a news item about one team.  Other slots draw a fresh value on every
    use, avoiding values already used in the same text while possible.
    A ``C_`` prefix (``{C_adj}``) capitalises the first letter.
    """

    def __init__(self, rng, pools, sticky=(), preset=None):
        self.rng = rng
        self.pools = pools
        self.sticky = frozenset(sticky)
        self.memo = dict(preset or {})
        self.used = {}
        for key, value in self.memo.items():
            self.used.setdefault(key.rstrip("0123456789"), []).append(value)

    def __getitem__(self, key):
        cap = key.startswith("C_")
        name = key[2:] if cap else key
        base = name.rstrip("0123456789")
        if name in self.memo:  # sticky or preset value
            value = self.memo[name]
        else:
            pool = self.pools[base]
            used = self.used.setdefault(base, [])
            fresh = [v for v in pool if v not in used]
            value = self.rng.choice(fresh or list(pool))
            used.append(value)
            if base in self.sticky:
                self.memo[name] = value
        return value[:1].upper() + value[1:] if cap else value

    def fill(self, template):
        return template.format_map(self)


_AN_EXCEPTIONS = (
    "one", "once", "unique", "unit", "univers", "uniform", "union", "use", "usu", "eu", "ura",
)
_AN_SILENT_H = ("hour", "honest", "honor", "heir")


def _wants_an(word):
    w = word.lower().lstrip("\"'(")
    if not w:
        return False
    if w.startswith(_AN_EXCEPTIONS):
        return False
    if w.startswith(_AN_SILENT_H) or w[0] in "aeiou8":
        return True
    return w.startswith(("11", "18")) and (len(w) == 2 or not w[2].isdigit())


def _fix_articles(text):
    """Choose between "a" and "an" for every article in ``text``."""
    words = text.split(" ")
    for i in range(len(words) - 1):
        low = words[i].lower()
        if low in ("a", "an"):
            new = "an" if _wants_an(words[i + 1]) else "a"
            words[i] = new.capitalize() if words[i][0].isupper() else new
    return " ".join(words)


def _capitalize(text):
    return text[:1].upper() + text[1:]


# ---------------------------------------------------------------------------
# Word lists and templates: data, in demo_templates.json beside this file
# ---------------------------------------------------------------------------
#
# Per task: "pools" (slot name -> values), "sticky" (slots that keep one value
# for the whole text) and the templates that use them. Sentiment: "short"
# (label -> one-line templates), "openers" (positive/negative/neutral),
# "closers" (label -> closing sentences) and "aspects" (label -> [category,
# sentences] pairs). Topic: "places" (regions of [country, capital, demonym])
# and "frames" (label -> stories, each with "head", "lead" and "more"
# templates). Changing the file changes the generated CSVs: regenerate them.

TEMPLATES_FILE = Path(__file__).with_name("demo_templates.json")


def _load_templates(path=TEMPLATES_FILE):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


_TEMPLATES = _load_templates()
_SENT = _TEMPLATES["sentiment"]
_TOPIC = _TEMPLATES["topic"]


# ---------------------------------------------------------------------------
# Sentiment: movie reviews
# ---------------------------------------------------------------------------


def _sentiment_aspects(rng, picker, label, k):
    categories = _SENT["aspects"][label]
    chosen = rng.sample(range(len(categories)), k)
    return [picker.fill(rng.choice(categories[i][1])) for i in chosen]


def _sentiment_opener(rng, picker, label):
    pool = _SENT["openers"]["neutral"] if rng.random() < 0.4 else _SENT["openers"][label]
    return picker.fill(rng.choice(pool))


def _sentiment_text(rng, label, kind):
    picker = _Picker(rng, _SENT["pools"], sticky=_SENT["sticky"])
    if kind == "short":
        text = picker.fill(rng.choice(_SENT["short"][label]))
        return text.lower() if rng.random() < 0.35 else _capitalize(text)

    if kind == "medium":
        mode = rng.random()
        if mode < 0.25:
            parts = [_sentiment_opener(rng, picker, label)]
            parts += _sentiment_aspects(rng, picker, label, 1)
        elif mode < 0.45:
            parts = _sentiment_aspects(rng, picker, label, 1)
            parts.append(picker.fill(rng.choice(_SENT["closers"][label])))
        elif mode < 0.75:
            parts = _sentiment_aspects(rng, picker, label, 2)
        else:
            parts = _sentiment_aspects(rng, picker, label, 1)
        text = " ".join(parts)
        return text.lower() if rng.random() < 0.1 else text

    # long: 3-6 sentences
    n_sentences = rng.randint(4, 6)
    has_opener = rng.random() < 0.8
    has_closer = rng.random() < 0.7
    k = max(2, n_sentences - has_opener - has_closer)
    parts = []
    if has_opener:
        parts.append(_sentiment_opener(rng, picker, label))
    parts += _sentiment_aspects(rng, picker, label, k)
    if has_closer:
        parts.append(picker.fill(rng.choice(_SENT["closers"][label])))
    return " ".join(parts)


# ---------------------------------------------------------------------------
# Topic: AG-News-style headlines and stories
# ---------------------------------------------------------------------------

def _topic_text(rng, label, kind):
    place, place2 = rng.sample(rng.choice(_TOPIC["places"]), 2)
    preset = {
        "country": place[0], "capital": place[1], "demonym": place[2],
        "country2": place2[0], "capital2": place2[1], "demonym2": place2[2],
    }
    picker = _Picker(rng, _TOPIC["pools"], sticky=_TOPIC["sticky"], preset=preset)
    frame = rng.choice(_TOPIC["frames"][label])
    head = _capitalize(picker.fill(rng.choice(frame["head"])))
    if kind == "short":
        return head
    lead = _capitalize(picker.fill(rng.choice(frame["lead"])))
    if kind == "medium":
        mode = rng.random()
        if mode < 0.2:
            return lead
        if mode < 0.75:
            return f"{head} - {lead}"
        extra = _capitalize(picker.fill(rng.choice(frame["more"])))
        return f"{head} - {lead} {extra}"
    k = rng.randint(2, 5)
    extras = [_capitalize(picker.fill(t)) for t in rng.sample(frame["more"], k)]
    return f"{head} - {lead} " + " ".join(extras)


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------

_TEXT_MAKERS = {"sentiment": _sentiment_text, "topic": _topic_text}
_WORD_RANGES = {"short": SHORT_WORDS, "medium": MEDIUM_WORDS, "long": LONG_WORDS}


def _normalize(text):
    return " ".join(text.lower().split())


def _length_plan(n, rng):
    n_short = round(n * SHORT_SHARE)
    n_long = round(n * LONG_SHARE)
    kinds = ["short"] * n_short + ["long"] * n_long + ["medium"] * (n - n_short - n_long)
    rng.shuffle(kinds)
    return kinds


def _check_args(task, split):
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASKS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")


def generate(task: str, split: str, seed: int = DEFAULT_SEED) -> list[tuple[str, str]]:
    """Return the demo rows ``(text, label)`` of ``task`` / ``split``.

    ``train`` has 600 rows and ``dev`` 160, split exactly evenly between the
    labels of ``TASKS[task]``.  The result depends only on the arguments:
    each (task, split, seed) has its own RNG stream, and no text occurs twice
    within a split or in both splits of a task.
    """
    _check_args(task, split)
    labels = TASKS[task]
    size = SPLIT_SIZES[split]
    if size % len(labels):
        raise ValueError(f"{size} rows cannot be balanced over {len(labels)} labels")
    per_class = size // len(labels)

    excluded = set()
    if split == "dev":
        excluded = {_normalize(text) for text, _ in generate(task, "train", seed)}

    rng = random.Random(f"demo-data/{task}/{split}/{seed}")
    make_text = _TEXT_MAKERS[task]
    seen = set()
    rows = []
    for label in labels:
        for kind in _length_plan(per_class, rng):
            low, high = _WORD_RANGES[kind]
            for _ in range(_MAX_ATTEMPTS):
                text = _fix_articles(make_text(rng, label, kind)).strip()
                key = _normalize(text)
                if low <= len(text.split()) <= high and key not in seen and key not in excluded:
                    break
            else:  # pragma: no cover - only reachable if the templates shrink
                raise RuntimeError(f"could not draw a new {kind} {task}/{label} text")
            seen.add(key)
            rows.append((text, label))
    rng.shuffle(rows)

    texts = [text for text, _ in rows]
    assert len(set(texts)) == len(texts), "duplicate texts within a split"
    assert not excluded.intersection(_normalize(t) for t in texts), "train/dev overlap"
    assert all(texts), "empty text"
    return rows


def demo_path(task: str, split: str) -> Path:
    """Path of the committed CSV file of ``task`` / ``split``."""
    return DATA_DIR / f"{task}_{split}.csv"


def write(task: str, split: str, path, seed: int = DEFAULT_SEED) -> Path:
    """Write ``generate(task, split, seed)`` to ``path`` as CSV (``text,label``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["text", "label"])
        writer.writerows(generate(task, split, seed))
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train.demo_data",
        description=(
            "Regenerate the small synthetic demo datasets used to train the default "
            "models offline: sentiment (movie reviews; labels negative/positive) and "
            "topic (news; labels World/Sports/Business/Sci/Tech), each with a train "
            "split (600 rows) and a dev split (160 rows), balanced per label. "
            "Output is byte-identical for a given seed. Files are named "
            "{task}_{split}.csv and have the header 'text,label'."
        ),
    )
    parser.add_argument(
        "--out-dir", type=Path, default=DATA_DIR,
        help="directory to write the four CSV files into (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED,
        help="base random seed; keep the default to reproduce the committed files "
             "(default: %(default)s)",
    )
    parser.add_argument(
        "--check", action="store_true",
        help="do not write; exit with status 1 if the files in --out-dir differ "
             "from what would be generated",
    )
    args = parser.parse_args(argv)

    stale = []
    for task in TASKS:
        for split in SPLITS:
            target = args.out_dir / f"{task}_{split}.csv"
            if args.check:
                tmp = target.with_name(target.name + ".check.tmp")
                try:
                    write(task, split, tmp, args.seed)
                    same = target.is_file() and target.read_bytes() == tmp.read_bytes()
                finally:
                    if tmp.exists():
                        tmp.unlink()
                print(f"{'ok   ' if same else 'STALE'} {target}")
                if not same:
                    stale.append(target)
            else:
                write(task, split, target, args.seed)
                print(f"wrote {target}")
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
