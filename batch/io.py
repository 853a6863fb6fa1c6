"""Streaming readers and writers for the batch job: CSV/TSV, JSONL and Parquet, a chunk at a time.

Reading never holds more than one chunk of rows. A row the job cannot use (a CSV record with the
wrong number of fields, bytes that are not UTF-8, a JSONL line that is not a JSON object, an empty
text) is not an exception: it becomes a row with an error message, in its place, so the output
keeps every input row.

CSV and JSONL are parsed with the standard library, one record at a time, over a byte stream whose
offset we count. That gives each bad record its own line number, and lets a resumed run or a shard
seek straight to the first row it owns. pyarrow's CSV and JSON readers parse in blocks: one bad
record fails its whole block, or is skipped without saying where it sat. Parquet is read and
written with pyarrow.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import re
import shutil
from bisect import bisect_right
from dataclasses import asdict, dataclass
from pathlib import Path
from collections.abc import Iterator
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from core.errors import DataError

# suffix -> format; `.json` is read as JSON lines, as the training data reader does
READ_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
                ".parquet": "parquet", ".pq": "parquet"}
WRITE_FORMATS = {k: v for k, v in READ_FORMATS.items() if k != ".json"}
DELIMITERS = {"csv": ",", "tsv": "\t"}

# Longest CSV field. Python's default (128 KiB) is far above any text a classifier reads, and an
# unclosed quote then costs one error row instead of swallowing the rest of the file into memory.
csv.field_size_limit(1 << 20)

# The merged Parquet output is written in row groups of about this many rows, whatever the chunk size.
ROW_GROUP_ROWS = 65_536
_COPY_BUFFER = 1 << 20
# surrogateescape turns undecodable bytes into these code points; they mark a bad row
_UNDECODABLE = re.compile("[\udc80-\udcff]")


def input_format(path: Path) -> str:
    if not path.exists():
        raise DataError(f"input file {path} does not exist.")
    if path.is_dir():
        raise DataError(f"{path} is a directory; give a CSV, TSV, JSONL or Parquet file.")
    fmt = READ_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unsupported input file type {path.suffix!r}; use one of "
                        f"{sorted(READ_FORMATS)}.")
    return fmt


def output_format(path: Path) -> str:
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unsupported output file type {path.suffix!r}; the output's suffix "
                        f"picks its format: one of {sorted(WRITE_FORMATS)}.")
    return fmt


@dataclass(frozen=True)
class Cursor:
    """Where the reader stands: the index of the next row (data rows, from 0) and, for CSV and
    JSONL, the byte offset and line number where that row starts."""

    row: int
    offset: int = 0
    line: int = 1

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, int]) -> Cursor:
        return cls(**data)


@dataclass
class Chunk:
    """Consecutive input rows. ``texts[i]`` is None exactly when ``errors[i]`` says why the row
    cannot be scored."""

    start: int  # index of its first row in the input
    table: pa.Table  # the input columns, as they are written out
    texts: list[str | None]
    errors: list[str]
    end: Cursor  # where the next chunk starts
    records: list[dict | None] | None = None  # JSONL: each object as read, written back whole

    def __len__(self) -> int:
        return len(self.texts)


def check_text(value: Any, where: str, column: str) -> tuple[str | None, str]:
    """The text to score, or None and why not."""
    if value is None:
        return None, f"{where}: no text (column {column!r} is null)"
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None, f"{where}: column {column!r} is not valid UTF-8"
    if not isinstance(value, str):
        return None, f"{where}: column {column!r} holds {_json_type(value)}, not text"
    if not value.strip():
        return None, f"{where}: empty text"
    return value, ""


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


class Reader:
    """A file's rows in chunks. ``columns`` and ``schema`` are the input columns as written out."""

    path: Path
    text_column: str
    columns: list[str]
    schema: pa.Schema

    def count(self, chunk_size: int) -> tuple[int, list[Cursor]]:
        """The number of rows, and a cursor at the start of every chunk of ``chunk_size`` rows
        plus one at the end: ``ceil(rows / chunk_size) + 1`` cursors. One streaming pass."""
        raise NotImplementedError

    def chunks(self, cursor: Cursor, stop: int, chunk_size: int) -> Iterator[Chunk]:
        """Chunks of ``chunk_size`` rows from ``cursor`` up to row ``stop`` (the last may be shorter)."""
        raise NotImplementedError

    def _text_column_missing(self, what: str) -> DataError:
        return DataError(f"{self.path} has no column {self.text_column!r}; its {what} are "
                         f"{self.columns}. Name the text column with --text-column.")


def open_reader(path: Path, fmt: str, text_column: str) -> Reader:
    if fmt in DELIMITERS:
        return CsvReader(path, text_column, DELIMITERS[fmt])
    if fmt == "jsonl":
        return JsonlReader(path, text_column)
    return ParquetReader(path, text_column)


class _Lines:
    """The lines of a byte stream from a cursor, decoded, counting bytes and lines as they are
    pulled. The csv reader pulls exactly the lines of one record per call (it reads no further
    ahead), so after each record ``offset`` is where the next one starts."""

    def __init__(self, f: BinaryIO, cursor: Cursor) -> None:
        f.seek(cursor.offset)
        self.f = f
        self.offset = cursor.offset
        self.line = cursor.line - 1  # lines consumed so far
        self.undecodable = False  # since the caller last cleared it

    def __iter__(self) -> Iterator[str]:
        for raw in self.f:
            at_start = self.offset == 0
            self.offset += len(raw)
            self.line += 1
            if at_start and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                self.undecodable = True
                yield raw.decode("utf-8", "surrogateescape")

    def cursor(self, row: int) -> Cursor:
        return Cursor(row, self.offset, self.line + 1)


def _repair(value: str) -> str:
    """A field holding undecodable bytes, with U+FFFD in their place, as it is written out."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class _RecordReader(Reader):
    """A text format parsed record by record (CSV/TSV, JSONL): ``_records(f, cursor)`` yields
    (values, error, place, cursor after it) from ``cursor``; ``first`` is the first row's cursor
    (after a CSV header). Counting and chunking are the same for both."""

    first: Cursor

    def _records(self, f: BinaryIO, cursor: Cursor) -> Iterator[tuple]:
        raise NotImplementedError

    def _chunk(self, start: int, values: list, errors: list[str], places: list, end: Cursor) -> Chunk:
        raise NotImplementedError

    def count(self, chunk_size: int) -> tuple[int, list[Cursor]]:
        cursors = [self.first]
        rows, after = 0, self.first
        with self.path.open("rb") as f:
            for _, _, _, after in self._records(f, self.first):
                rows += 1
                if rows % chunk_size == 0:
                    cursors.append(after)
        if rows % chunk_size:
            cursors.append(after)
        return rows, cursors

    def chunks(self, cursor: Cursor, stop: int, chunk_size: int) -> Iterator[Chunk]:
        if cursor.row >= stop:
            return
        with self.path.open("rb") as f:
            values: list = []
            errors: list[str] = []
            places: list = []
            start = cursor.row
            for value, error, where, after in self._records(f, cursor):
                values.append(value)
                errors.append(error)
                places.append(where)
                if len(values) == chunk_size or after.row == stop:
                    yield self._chunk(start, values, errors, places, after)
                    if after.row == stop:
                        return
                    values, errors, places, start = [], [], [], after.row
            if values:  # the file ended before `stop`: the caller sees the shortfall
                yield self._chunk(start, values, errors, places, after)


class CsvReader(_RecordReader):
    def __init__(self, path: Path, text_column: str, delimiter: str) -> None:
        self.path, self.text_column, self.delimiter = path, text_column, delimiter
        with path.open("rb") as f:
            lines = _Lines(f, Cursor(0))
            reader = csv.reader(iter(lines), delimiter=delimiter)
            try:
                header = next((record for record in reader if record), None)
            except csv.Error as exc:
                raise DataError(f"{path}: the header row cannot be read as CSV ({exc}).") from None
            if header is None:
                raise DataError(f"{path} is empty: it has no header row naming the columns.")
            if lines.undecodable:
                raise DataError(f"{path}: the header row is not valid UTF-8; save the file as UTF-8.")
            self.first = lines.cursor(0)
        duplicates = sorted({name for name in header if header.count(name) > 1})
        if duplicates:
            raise DataError(f"{path}: the header names the column(s) {duplicates} more than once; "
                            "give every column its own name.")
        self.columns = header
        self.schema = pa.schema([(name, pa.string()) for name in header])
        if text_column not in header:
            raise self._text_column_missing("columns")
        self._text_index = header.index(text_column)

    def _records(self, f: BinaryIO, cursor: Cursor) -> Iterator[tuple[list[str] | None, str, str, Cursor]]:
        """(values or None, error, where, cursor after) for every row from ``cursor``; blank lines
        are not rows. ``where`` names the record's first line, for messages."""
        lines = _Lines(f, cursor)
        reader = csv.reader(iter(lines), delimiter=self.delimiter)
        row, width = cursor.row, len(self.columns)
        while True:
            where = f"line {lines.line + 1}"
            lines.undecodable = False
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                row += 1
                yield None, f"{where}: not readable as CSV ({exc})", where, lines.cursor(row)
                continue
            if not fields:
                continue
            row += 1
            if len(fields) != width:
                error = f"{where}: {len(fields)} fields where the header has {width}"
                yield None, error, where, lines.cursor(row)
            elif lines.undecodable:
                bad = next(name for name, value in zip(self.columns, fields, strict=True) if _UNDECODABLE.search(value))
                error = f"{where}: column {bad!r} is not valid UTF-8 (written with U+FFFD in its place)"
                yield [_repair(v) for v in fields], error, where, lines.cursor(row)
            else:
                yield fields, "", where, lines.cursor(row)

    def _chunk(self, start: int, rows: list[list[str] | None], errors: list[str], places: list[str],
               end: Cursor) -> Chunk:
        texts: list[str | None] = []
        for i, values in enumerate(rows):
            if errors[i]:
                texts.append(None)
                continue
            text, errors[i] = check_text(values[self._text_index], places[i], self.text_column)
            texts.append(text)
        columns = [[None if values is None else values[j] for values in rows]
                   for j in range(len(self.columns))]
        table = pa.Table.from_arrays([pa.array(c, pa.string()) for c in columns], schema=self.schema)
        return Chunk(start, table, texts, errors, end)


class JsonlReader(_RecordReader):
    """One JSON object per line. The columns are the fields of the first object; later objects may
    lack some (null) or add others (kept in JSONL output only)."""

    def __init__(self, path: Path, text_column: str) -> None:
        self.path, self.text_column = path, text_column
        first = None
        with path.open("rb") as f:
            for record, _, _, _ in self._records(f, Cursor(0)):
                if record is not None:
                    first = record
                    break
        self.columns = list(first) if first is not None else []
        # a field's values may be of any JSON type, and a later row may disagree with the first:
        # outside JSONL output every field is text, non-strings written as JSON
        self.schema = pa.schema([(name, pa.string()) for name in self.columns])
        if first is not None and text_column not in first:
            raise self._text_column_missing("first object's fields")
        self.extra_fields: dict[str, int] = {}  # field -> first line holding it, beyond `columns`
        self.first = Cursor(0)

    def _records(self, f: BinaryIO, cursor: Cursor) -> Iterator[tuple[dict | None, str, int, Cursor]]:
        f.seek(cursor.offset)
        offset, line, row = cursor.offset, cursor.line - 1, cursor.row
        for raw in f:
            at_start = offset == 0
            offset += len(raw)
            line += 1
            if at_start and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            if not raw.strip():
                continue
            record, error = None, ""
            try:
                value = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                error = f"line {line}: not valid UTF-8"
            except json.JSONDecodeError as exc:
                error = f"line {line}: not valid JSON ({exc.msg} at column {exc.colno})"
            else:
                if isinstance(value, dict):
                    record = value
                else:
                    error = f"line {line}: {_json_type(value)}, not a JSON object"
            row += 1
            yield record, error, line, Cursor(row, offset, line + 1)

    def _chunk(self, start: int, records: list[dict | None], errors: list[str], lines: list[int],
               end: Cursor) -> Chunk:
        texts: list[str | None] = []
        known = set(self.columns)
        for i, record in enumerate(records):
            if record is None:
                texts.append(None)
                continue
            for name in record.keys() - known:
                self.extra_fields.setdefault(name, lines[i])
            where = f"line {lines[i]}"
            if self.text_column not in record:
                texts.append(None)
                errors[i] = f"{where}: no field {self.text_column!r}"
                continue
            text, errors[i] = check_text(record[self.text_column], where, self.text_column)
            texts.append(text)
        columns = [pa.array([_as_text(r.get(name)) if r is not None else None for r in records], pa.string())
                   for name in self.columns]
        table = pa.Table.from_arrays(columns, schema=self.schema)
        return Chunk(start, table, texts, errors, end, records=records)


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


TEXT_TYPES = (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary,
              pa.types.is_large_binary, pa.types.is_null)


class ParquetReader(Reader):
    def __init__(self, path: Path, text_column: str) -> None:
        self.path, self.text_column = path, text_column
        try:
            self.file = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{path} could not be read as Parquet: {exc}") from None
        # pandas' metadata describes the columns pandas wrote; with ours added it would mislead
        self.schema = self.file.schema_arrow.remove_metadata()
        self.columns = self.schema.names
        if text_column not in self.columns:
            raise self._text_column_missing("columns")
        kind = self.schema.field(text_column).type
        value_type = kind.value_type if pa.types.is_dictionary(kind) else kind
        if not any(is_text(value_type) for is_text in TEXT_TYPES):
            raise DataError(f"{path}: column {text_column!r} holds {kind}, not text; name the text "
                            "column with --text-column.")
        meta = self.file.metadata
        self._group_starts = []
        rows = 0
        for i in range(meta.num_row_groups):
            self._group_starts.append(rows)
            rows += meta.row_group(i).num_rows
        self._rows = rows

    def count(self, chunk_size: int) -> tuple[int, list[Cursor]]:
        chunks = math.ceil(self._rows / chunk_size)
        return self._rows, [Cursor(min(k * chunk_size, self._rows)) for k in range(chunks + 1)]

    def chunks(self, cursor: Cursor, stop: int, chunk_size: int) -> Iterator[Chunk]:
        row = cursor.row
        if row >= stop:
            return
        group = bisect_right(self._group_starts, row) - 1
        skip = row - self._group_starts[group]
        pending: list[pa.RecordBatch] = []
        held = 0
        try:
            batches = self.file.iter_batches(batch_size=chunk_size,
                                             row_groups=range(group, self.file.num_row_groups),
                                             use_threads=False)
            for batch in batches:
                if skip:
                    taken = min(skip, batch.num_rows)
                    batch, skip = batch.slice(taken), skip - taken
                pending.append(batch)
                held += batch.num_rows
                while held >= min(chunk_size, stop - row) and row < stop:
                    size = min(chunk_size, stop - row)
                    table = pa.Table.from_batches(pending, schema=self.file.schema_arrow)
                    yield self._chunk(row, table.slice(0, size))
                    rest = table.slice(size)
                    pending, held, row = rest.to_batches(), rest.num_rows, row + size
                if row >= stop:
                    return
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{self.path}: rows from {row} on could not be read: {exc}") from None
        if held and row < stop:
            yield self._chunk(row, pa.Table.from_batches(pending, schema=self.file.schema_arrow))

    def _chunk(self, start: int, table: pa.Table) -> Chunk:
        table = table.replace_schema_metadata(None)
        texts: list[str | None] = []
        errors: list[str] = []
        for i, value in enumerate(table.column(self.text_column).to_pylist()):
            text, error = check_text(value, f"row {start + i}", self.text_column)
            texts.append(text)
            errors.append(error)
        return Chunk(start, table, texts, errors, Cursor(start + len(texts)))


# ---------------------------------------------------------------------------------------------
# Writing


def _cell(value: Any) -> Any:
    """A value as the csv module should write it; None is written as an empty field."""
    if value is None or isinstance(value, (str, int, float)):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)  # dates, decimals: as pyarrow gives them to Python


class Writer:
    """Writes chunks with their predictions as part files in the output's format, and merges
    part files (or finished shard outputs) into one output."""

    def __init__(self, fmt: str, schema: pa.Schema) -> None:
        self.fmt, self.schema = fmt, schema
        self.delimiter = DELIMITERS.get(fmt)

    def header(self) -> bytes:
        if self.delimiter is None:
            return b""
        out = io.StringIO(newline="")
        csv.writer(out, delimiter=self.delimiter).writerow(self.schema.names)
        return out.getvalue().encode("utf-8")

    def write(self, f: BinaryIO, chunk: Chunk, added: dict[str, list]) -> None:
        """One chunk's rows, without a header."""
        if self.fmt == "parquet":
            arrays = [*chunk.table.columns,
                      *(pa.array(values, self.schema.field(name).type) for name, values in added.items())]
            pq.write_table(pa.Table.from_arrays(arrays, schema=self.schema), f)
            return
        columns = [c.to_pylist() for c in chunk.table.columns]
        if self.delimiter is not None:
            plain = [pa.types.is_string(c.type) for c in chunk.table.columns]
            columns = [c if ok else [_cell(v) for v in c] for c, ok in zip(columns, plain, strict=True)]
            text = io.TextIOWrapper(f, encoding="utf-8", newline="")
            csv.writer(text, delimiter=self.delimiter).writerows(zip(*columns, *added.values(), strict=True))
            text.flush()
            text.detach()
            return
        names = chunk.table.column_names
        lines = []
        for i in range(len(chunk)):
            record = chunk.records[i] if chunk.records is not None else None
            obj = dict(record) if record is not None else {n: c[i] for n, c in zip(names, columns, strict=True)}
            for name, values in added.items():
                obj[name] = values[i]
            lines.append(json.dumps(obj, ensure_ascii=False, default=_json_default))
        if lines:
            f.write(("\n".join(lines) + "\n").encode("utf-8"))

    def merge_parts(self, parts: list[Path], f: BinaryIO) -> None:
        """The part files of one run, in order, as one output file."""
        if self.fmt != "parquet":
            f.write(self.header())
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, f, _COPY_BUFFER)
            return
        with pq.ParquetWriter(f, self.schema) as writer:
            pending: list[pa.Table] = []
            held = 0
            for part in parts:
                table = pq.read_table(part)
                pending.append(table)
                held += table.num_rows
                if held >= ROW_GROUP_ROWS:
                    writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
                    pending, held = [], 0
            if pending:
                writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)


def csv_header(path: Path, delimiter: str) -> tuple[list[str], int]:
    """The header record of a CSV file we wrote, and the byte offset where its rows start."""
    with path.open("rb") as f:
        lines = _Lines(f, Cursor(0))
        header = next(csv.reader(iter(lines), delimiter=delimiter), [])
        return header, lines.offset


def concat_outputs(files: list[Path], fmt: str, f: BinaryIO) -> None:
    """Finished outputs with the same columns (shards), in order, as one file. Raises DataError
    naming the first file whose columns (or, in Parquet, recorded model) differ from the first's."""
    if fmt == "parquet":
        first = pq.ParquetFile(files[0]).schema_arrow
        for path in files[1:]:
            if not pq.ParquetFile(path).schema_arrow.equals(first, check_metadata=True):
                raise DataError(_differs(path, files[0], "columns or recorded model (Parquet schema "
                                         "and metadata)"))
        with pq.ParquetWriter(f, first) as writer:
            for path in files:
                source = pq.ParquetFile(path)
                for group in range(source.num_row_groups):
                    writer.write_table(source.read_row_group(group))
        return
    delimiter = DELIMITERS.get(fmt)
    headers = [csv_header(path, delimiter) if delimiter else ([], 0) for path in files]
    for path, (header, _) in zip(files[1:], headers[1:], strict=True):
        if header != headers[0][0]:
            raise DataError(_differs(path, files[0], f"columns ({header} vs {headers[0][0]})"))
    if delimiter:
        with files[0].open("rb") as src:
            f.write(src.read(headers[0][1]))
    for path, (_, offset) in zip(files, headers, strict=True):
        with path.open("rb") as src:
            src.seek(offset)
            shutil.copyfileobj(src, f, _COPY_BUFFER)


def count_rows(path: Path, fmt: str) -> int:
    """Rows of an output file we wrote (one streaming pass for CSV and JSONL)."""
    if fmt == "parquet":
        return pq.ParquetFile(path).metadata.num_rows
    with path.open("r", encoding="utf-8", newline="") as f:
        if fmt == "jsonl":
            return sum(1 for line in f if line.strip())
        return max(0, sum(1 for record in csv.reader(f, delimiter=DELIMITERS[fmt]) if record) - 1)


def _differs(path: Path, first: Path, what: str) -> str:
    return (f"{path.name} and {first.name} differ in their {what}: they were scored with different "
            "arguments or models. Score every shard with the same command and model.")
