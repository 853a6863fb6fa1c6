"""Labelled text in: CSV, JSONL or Parquet files with text and label columns, or a hub dataset.

Every problem a user can fix (a missing file, unknown columns, empty texts, a single class,
labels the model does not know) raises DataError with a message that names it.
Torch-free: evaluation of a served bundle reads data through here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from core.errors import DataError
from core.tasks import HUB_LABELS

READERS = {
    ".csv": lambda p: pd.read_csv(p, dtype=str, keep_default_na=False),
    ".tsv": lambda p: pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False),
    ".jsonl": lambda p: pd.read_json(p, lines=True, dtype=False),
    ".json": lambda p: pd.read_json(p, lines=True, dtype=False),
    ".parquet": pd.read_parquet,
    ".pq": pd.read_parquet,
}


@dataclass
class LabelledData:
    texts: list[str]
    labels: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def classes(self) -> set[str]:
        return set(self.labels)


def read_table(path: str | Path) -> pd.DataFrame:
    """Any supported file as a DataFrame; the suffix picks the reader."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file {path} does not exist.")
    if path.is_dir():
        raise DataError(f"{path} is a directory; give a CSV, JSONL or Parquet file.")
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(
            f"{path}: unsupported file type {path.suffix!r}; use one of {sorted(READERS)}."
        )
    try:
        return reader(path)
    except Exception as exc:  # the readers' own errors are precise; keep them
        raise DataError(f"{path} could not be read as {path.suffix}: {exc}") from exc


def load_labelled(
    source: str | Path,
    *,
    text_column: str = "text",
    label_column: str = "label",
    split: str = "train",
    limit: int | None = None,
) -> LabelledData:
    """Read and check labelled data from a file or, when no such file exists, a hub dataset."""
    path = Path(source)
    if path.exists() or path.suffix.lower() in READERS:
        frame = read_table(path)
        name = str(path)
    else:
        frame = _load_hub(str(source), split, text_column, label_column)
        name = f"{source}[{split}]"
    missing = [c for c in (text_column, label_column) if c not in frame.columns]
    if missing:
        raise DataError(
            f"{name} has no column {', '.join(map(repr, missing))}; its columns are "
            f"{list(frame.columns)}. Name the right ones with --text-column/--label-column."
        )
    if limit is not None:
        frame = frame.head(limit)
    if frame.empty:
        raise DataError(f"{name} has no rows.")
    texts = frame[text_column]
    labels = frame[label_column]
    bad_text = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad_text:
        raise DataError(
            f"{name} has {len(bad_text)} empty or non-text value(s) in column {text_column!r} "
            f"(data rows {_rows(bad_text)}); remove or fill them."
        )
    bad_label = [i for i, v in enumerate(labels) if v is None or str(v).strip() == ""]
    if bad_label:
        raise DataError(
            f"{name} has {len(bad_label)} empty label(s) in column {label_column!r} "
            f"(data rows {_rows(bad_label)})."
        )
    return LabelledData(
        texts=[str(t) for t in texts],
        labels=[str(v).strip() for v in labels],
        source=name,
    )


def load_many(sources: list[str], *, limit: int | None = None, **kwargs) -> LabelledData:
    """Several files (or hub datasets) as one set, in the order given; `limit` caps the whole."""
    if not sources:
        raise DataError("no training data given.")
    parts = [load_labelled(source, **kwargs) for source in sources]
    return LabelledData(
        texts=[t for p in parts for t in p.texts][:limit],
        labels=[label for p in parts for label in p.labels][:limit],
        source=" + ".join(p.source for p in parts),
    )


def check_trainable(data: LabelledData) -> None:
    if len(data.classes) < 2:
        raise DataError(
            f"{data.source} has only one class ({next(iter(data.classes))!r}); a classifier "
            "needs examples of at least two."
        )


def check_known_labels(data: LabelledData, known: list[str]) -> None:
    unknown = sorted(data.classes - set(known))
    if unknown:
        raise DataError(
            f"{data.source} has label(s) {unknown} that the model does not know; it knows "
            f"{known}. Fix the labels or evaluate a model trained on them."
        )


def _rows(indices: list[int], shown: int = 5) -> str:
    head = ", ".join(str(i + 1) for i in indices[:shown])
    return head + (", ..." if len(indices) > shown else "")


def _load_hub(name: str, split: str, text_column: str, label_column: str) -> pd.DataFrame:
    """A Hugging Face hub dataset (needs a network). Integer class ids become class names."""
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a training dependency
        raise DataError(f"{name} is no file, and loading hub datasets needs `datasets`.") from exc
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as exc:
        raise DataError(
            f"{name!r} is neither a file nor a hub dataset that could be loaded "
            f"(split {split!r}): {type(exc).__name__}: {exc}"
        ) from exc
    frame = ds.to_pandas()
    feature = ds.features.get(label_column)
    names = HUB_LABELS.get(name) or getattr(feature, "names", None)
    if names and label_column in frame.columns and pd.api.types.is_integer_dtype(frame[label_column]):
        frame[label_column] = frame[label_column].map(lambda i: names[int(i)])
    return frame
