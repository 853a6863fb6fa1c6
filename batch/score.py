"""The batch scoring stage: ``ScoreConfig`` -> ``score``, and ``MergeConfig`` -> ``merge_shards``.

``score`` reads the input in chunks of ``chunk_size`` rows (``batch.io``), scores each chunk's
texts on the serving engine (sorted by length, padded per call under a token budget inside it) or through a
running service (``batch.client``), and commits each chunk as a numbered part file in a work
directory beside the output (``batch.workdir``). When every chunk is committed, the parts are
merged into the output and the work directory is deleted. Killed at any point and run again with
the same arguments, it resumes after the last committed chunk; with other arguments or another
model it refuses, naming what differs.

Sharding: the input's chunks, numbered from 0 over the whole file, are cut into ``num_shards``
contiguous runs of whole chunks; shard ``i`` scores run ``i`` and writes
``OUTPUT`` with ``.shard-0000i-of-0000N`` before the suffix. Shards therefore hold the input's rows
in order (concatenated in shard order they are the input), and a row is scored in the same chunk,
with the same neighbours, as in an unsharded run: the merged output equals the unsharded one.
``merge_shards`` concatenates them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from batch import io
from batch.client import Outcome, RetryPolicy, ServiceScorer
from batch.workdir import STATE_FORMAT, WorkDir, write_atomic
from core.errors import DataError, UserError
from engine.bundle import BundleError, describe_long_texts, resolve_bundle
from engine.options import EngineOptions, open_engine

FIRST_ERRORS = 5  # error messages kept for the summary


class ScoreConfig(BaseModel):
    """One scoring run: what to read, which model, where to write."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: Path
    output: Path
    task: str | None = None  # the task's latest bundle in the store, or the service's endpoint
    model: str | None = None  # a bundle directory or store tag, instead of task
    text_column: str = "text"
    probabilities: bool = False  # add prob_<label> for every class
    column_prefix: str = ""  # before every added column's name
    url: str | None = None  # score through this service instead of in process
    concurrency: int = Field(4, ge=1, le=256)
    request_size: int = Field(32, ge=1)
    retries: int = Field(5, ge=0)
    backoff: float = Field(0.5, gt=0)
    max_backoff: float = Field(30.0, gt=0)
    timeout: float = Field(120.0, gt=0)
    chunk_size: int = Field(1000, ge=1)
    num_shards: int = Field(1, ge=1)  # before shard_index: its check reads this
    shard_index: int = Field(0, ge=0)
    work_dir: Path | None = None  # where OUTPUT.work goes; default: the output's directory
    restart: bool = False  # discard a run in progress and start over
    overwrite: bool = False  # replace an existing output
    # the engine this process opens to score in process (device, threads, tokens per model call,
    # the long-text rule); unused with url, where the service's own settings apply
    engine: EngineOptions = Field(default_factory=EngineOptions)

    @field_validator("shard_index")
    @classmethod
    def _in_range(cls, index: int, info: ValidationInfo) -> int:
        shards = info.data.get("num_shards")
        if shards is not None and index >= shards:
            raise PydanticCustomError(
                "shard_range",
                "{index} is not below --num-shards {shards}: shards are numbered 0 to {last}. In a "
                "Kubernetes Indexed Job, JOB_COMPLETION_INDEX sets the index and TEXTCLS_NUM_SHARDS "
                "must equal the Job's completions.",
                {"index": index, "shards": shards, "last": shards - 1},
            )
        return index

    @field_validator("url")
    @classmethod
    def _http(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise PydanticCustomError("url", "{url!r} is not an http:// or https:// URL",
                                      {"url": url})
        return url


class ScoreProgress:
    """What ``score`` reports while it runs; the CLI draws a progress bar. These do nothing."""

    def start(self, total: int, done: int) -> None:
        """``total`` rows to write in this output, ``done`` of them committed by an earlier run."""

    def advance(self, rows: int) -> None:
        """``rows`` more rows committed."""

    def note(self, message: str) -> None:
        """Something worth telling the user (a retry, a resume)."""


@dataclass
class ScoreSummary:
    output: Path
    rows: int  # in the output
    scored: int
    errors: int
    labels: dict[str, int]  # predicted label -> rows, over the whole output
    first_errors: list[str]
    resumed_rows: int  # committed by earlier runs
    seconds: float  # this run, start-up included
    scoring_seconds: float  # this run's scoring loop
    model: dict[str, str]
    shard: tuple[int, int]

    @property
    def rows_this_run(self) -> int:
        return self.rows - self.resumed_rows

    @property
    def rows_per_second(self) -> float:
        return self.rows_this_run / self.scoring_seconds if self.scoring_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"output": str(self.output), "rows": self.rows, "scored": self.scored,
                "errors": self.errors, "labels": self.labels, "first_errors": self.first_errors,
                "resumed_rows": self.resumed_rows, "rows_this_run": self.rows_this_run,
                "seconds": round(self.seconds, 3), "scoring_seconds": round(self.scoring_seconds, 3),
                "rows_per_second": round(self.rows_per_second, 1), "model": self.model,
                "shard": list(self.shard)}


class Scorer(Protocol):
    labels: list[str]
    identity: dict[str, str]  # task, version, variant (and url when the version is unknown)

    def score(self, texts: list[str]) -> list[Outcome]: ...

    def check(self) -> None: ...

    def close(self) -> None: ...


def shard_path(output: Path, index: int, shards: int) -> Path:
    """``scored.csv`` -> ``scored.shard-00002-of-00004.csv``; the output itself when unsharded."""
    if shards == 1:
        return output
    return output.with_name(f"{output.stem}.shard-{index:05d}-of-{shards:05d}{output.suffix}")


def default_work_dir(output: Path, parent: Path | None = None) -> Path:
    """``OUTPUT.work``, in ``parent`` or beside the output: each shard has its own."""
    return (parent or output.parent) / (output.name + ".work")


def shard_chunks(chunks: int, index: int, shards: int) -> tuple[int, int]:
    """The chunks [first, stop) shard ``index`` of ``shards`` owns: contiguous, sizes differing by
    at most one, together every chunk once."""
    return index * chunks // shards, (index + 1) * chunks // shards


def added_columns(labels: list[str], probabilities: bool, prefix: str) -> list[tuple[str, pa.DataType]]:
    columns = [(f"{prefix}label", pa.string()), (f"{prefix}score", pa.float64())]
    if probabilities:
        columns += [(f"{prefix}prob_{label}", pa.float64()) for label in labels]
    return [*columns, (f"{prefix}error", pa.string())]


def score(config: ScoreConfig, progress: ScoreProgress | None = None) -> ScoreSummary:
    """Score ``config.input`` into ``config.output`` (or this shard's part of it); resumable."""
    started = time.perf_counter()
    progress = progress or ScoreProgress()
    _check_model_choice(config)
    in_format = io.input_format(config.input)
    out_format = io.output_format(config.output)
    output = shard_path(config.output, config.shard_index, config.num_shards)
    if output.resolve() == config.input.resolve():
        raise UserError(f"the output {output} is the input file; write somewhere else.")
    reader = io.open_reader(config.input, in_format, config.text_column)
    work = WorkDir(default_work_dir(output, config.work_dir), output.suffix)
    finished = _existing_output(config, output, work)
    output.parent.mkdir(parents=True, exist_ok=True)

    scorer = _open_scorer(config, progress)
    try:
        if finished is not None:
            return _already_finished(config, finished, scorer, work, output, writer_format=out_format,
                                     started=started)
        added = added_columns(scorer.labels, config.probabilities, config.column_prefix)
        clash = sorted({name for name, _ in added} & set(reader.columns))
        if clash:
            raise UserError(
                f"{config.input} already has the column(s) {clash} that the output adds; add "
                f"--column-prefix (e.g. --column-prefix pred_ writes pred_label, pred_score, ...)."
            )
        recorded = {"model": scorer.identity, "text_column": config.text_column}
        schema = pa.schema([*reader.schema, *added],
                           metadata={"textcls.score": json.dumps(recorded, sort_keys=True)})
        work.open()
        try:
            return _run(config, reader, scorer, work, io.Writer(out_format, schema), output,
                        [name for name, _ in added], progress, started)
        finally:
            work.close()
    finally:
        scorer.close()


def _existing_output(config: ScoreConfig, output: Path, work: WorkDir) -> tuple[dict, dict] | None:
    """Whether an existing output may be written: with a run in progress for it (to finish), with
    --overwrite, or when the run that wrote it was killed while deleting its work directory (then
    its state and progress, to compare)."""
    finished = None
    if output.exists() and not (config.restart or config.overwrite):
        finished = work.finished()
    if finished is None:
        work.remove_leftovers()
        if output.exists() and not config.overwrite and (config.restart or not work.has_state()):
            raise UserError(f"{output} already exists and no run is in progress for it: add "
                            "--overwrite to score again and replace it, or choose another --output.")
    return finished


def _already_finished(config: ScoreConfig, finished: tuple[dict, dict], scorer: Scorer, work: WorkDir,
                      output: Path, *, writer_format: str, started: float) -> ScoreSummary:
    """An earlier run wrote ``output`` and was killed while deleting its work directory: with the
    same arguments and model there is nothing left to do."""
    state, done = finished
    differences = _differences(state, _arguments(config, writer_format), scorer.identity)
    if differences:
        raise UserError(f"{output} was written by a run with other arguments or another model:\n  "
                        + "\n  ".join(differences) + "\nAdd --overwrite to score again and replace it.")
    work.remove_leftovers()
    rows = done.get("rows", state["end"] - state["start"])
    return ScoreSummary(
        output=output, rows=rows, scored=done.get("scored", 0), errors=done.get("errors", 0),
        labels=done.get("labels", {}), first_errors=done.get("first_errors", []), resumed_rows=rows,
        seconds=time.perf_counter() - started, scoring_seconds=0.0, model=scorer.identity,
        shard=(config.shard_index, config.num_shards),
    )


def _check_model_choice(config: ScoreConfig) -> None:
    if config.url is not None:
        if config.model is not None:
            raise UserError("--model names a local bundle; with --url the service's model for "
                            "--task scores. Give --task, not --model.")
        if config.task is None:
            raise UserError("--url needs --task: the service's endpoint to call (/sentiment, /topic).")
        if config.engine.long_texts or config.engine.max_windows is not None:
            raise UserError("--long-texts and --max-windows set how this process's engine reads "
                            "long texts; with --url the service reads them by its own rule "
                            "(TEXTCLS_LONG_TEXTS). Drop them, or score in process.")
    elif (config.task is None) == (config.model is None):
        raise UserError("give either --task (the task's latest bundle in the BentoML store) or "
                        "--model (a bundle directory or store tag), or --url and --task.")


def _open_scorer(config: ScoreConfig, progress: ScoreProgress) -> Scorer:
    if config.url is not None:
        scorer = ServiceScorer(config.url, config.task, concurrency=config.concurrency,
                               request_size=config.request_size, timeout=config.timeout,
                               policy=RetryPolicy(config.retries, config.backoff, config.max_backoff),
                               note=progress.note)
        try:
            scorer.connect()
        except BaseException:
            scorer.close()
            raise
        return scorer
    return EngineScorer(config)


class EngineScorer:
    """The serving engine in this process, on the bundle the service would serve."""

    def __init__(self, config: ScoreConfig) -> None:
        ref = config.model or config.task
        try:
            bundle = resolve_bundle(ref)  # in a Bento container: its packed models
            if config.task is not None and bundle.task != config.task:
                raise UserError(f"the store's {ref!r} bundle is a {bundle.task!r} model, not {config.task!r}.")
            self.engine = open_engine(bundle, config.engine)
        except BundleError as exc:
            raise UserError(str(exc)) from None
        self.labels = self.engine.labels
        # long_texts is a record (the output's metadata, the summary), not compared on resume:
        # --long-texts and --max-windows are, as arguments
        self.identity = {"task": self.engine.task, "version": self.engine.version,
                         "variant": self.engine.variant,
                         "long_texts": describe_long_texts(self.engine.long_texts)}

    def score(self, texts: list[str]) -> list[Outcome]:
        labels = self.labels
        return [Outcome(p.label, p.score, [p.scores[label] for label in labels])
                for p in self.engine.predict(texts)]

    def check(self) -> None:
        pass

    def close(self) -> None:
        pass


# what each recorded argument is called on the command line, for the refusal message
ARGUMENT_NAMES = {"input": "INPUT", "input_bytes": "the input file's size in bytes",
                  "input_mtime_ns": "the input file's modification time (ns)",
                  "text_column": "--text-column", "probabilities": "--probabilities",
                  "column_prefix": "--column-prefix", "chunk_size": "--chunk-size",
                  "shard_index": "--shard-index", "num_shards": "--num-shards",
                  "long_texts": "--long-texts", "max_windows": "--max-windows",
                  "output_format": "the output format", "format": "the work directory's format"}


def _arguments(config: ScoreConfig, out_format: str) -> dict[str, Any]:
    stat = config.input.stat()
    return {"input": str(config.input.resolve()), "input_bytes": stat.st_size,
            "input_mtime_ns": stat.st_mtime_ns, "text_column": config.text_column,
            "probabilities": config.probabilities, "column_prefix": config.column_prefix,
            "chunk_size": config.chunk_size, "shard_index": config.shard_index,
            "num_shards": config.num_shards, "output_format": out_format, "format": STATE_FORMAT,
            # None when not given, as runs before EngineOptions recorded it: they still resume
            "long_texts": config.engine.long_texts or None, "max_windows": config.engine.max_windows}


def _differences(state: dict[str, Any], arguments: dict[str, Any], model: dict[str, str]) -> list[str]:
    was = {**state.get("arguments", {}), "format": state.get("format")}
    found = [f"{ARGUMENT_NAMES.get(key, key)}: was {was.get(key)!r}, now {value!r}"
             for key, value in arguments.items() if was.get(key) != value]
    old = state.get("model", {})
    # the model is what must not change, not the route to it: a bundle in process and the same
    # bundle behind --url are one model; the URL counts only when the service hides the version
    for key in sorted({"task", "version", "variant", "url"} & (old.keys() | model.keys())):
        if old.get(key) != model.get(key):
            found.append(f"model {key}: was {old.get(key)!r}, now {model.get(key)!r}")
    return found


def _run(config: ScoreConfig, reader: io.Reader, scorer: Scorer, work: WorkDir, writer: io.Writer,
         output: Path, added: list[str], progress: ScoreProgress, started: float) -> ScoreSummary:
    arguments = _arguments(config, writer.fmt)
    if config.restart:
        work.clear()
    state = work.state()
    if state is not None:
        differences = _differences(state, arguments, scorer.identity)
        if differences:
            committed = (work.progress() or {}).get("rows", 0)
            raise UserError(
                f"{work.path} holds a run of {output.name} started with other arguments or another "
                "model; resuming would mix them in one output:\n  " + "\n  ".join(differences) +
                f"\nRun the earlier command again to resume it, or add --restart to discard its "
                f"{committed} committed rows and start over (or delete {work.path})."
            )
    else:
        work.clear()  # a run killed before it wrote its state left at most temporary files
        total, cursors = reader.count(config.chunk_size)
        first, stop = shard_chunks(len(cursors) - 1, config.shard_index, config.num_shards)
        state = {"arguments": arguments, "model": scorer.identity, "total_rows": total,
                 "start": cursors[first].row, "end": cursors[stop].row,
                 "start_cursor": cursors[first].to_dict(), "columns": added}
        work.write_state(state)

    start, end = state["start"], state["end"]
    done = work.progress() or {"parts": 0, "rows": 0, "cursor": state["start_cursor"], "scored": 0,
                               "errors": 0, "labels": {}, "first_errors": []}
    work.drop_uncommitted(done["parts"])
    resumed = done["rows"]
    if resumed:
        progress.note(f"resuming {output.name}: {resumed} of {end - start} rows were committed "
                      "by an earlier run")
    progress.start(end - start, resumed)

    loop_started = time.perf_counter()
    label_name, score_name, *prob_names, error_name = added
    for chunk in reader.chunks(io.Cursor.from_dict(done["cursor"]), end, config.chunk_size):
        valid = [i for i, text in enumerate(chunk.texts) if text is not None]
        outcomes = dict(zip(valid, scorer.score([chunk.texts[i] for i in valid]), strict=True))
        columns: dict[str, list] = {name: [] for name in added}
        labels = dict(done["labels"])
        errors = list(chunk.errors)
        for i in range(len(chunk)):
            outcome = outcomes.get(i)
            if outcome is not None and outcome.error:
                errors[i] = f"row {chunk.start + i}: {outcome.error}"
            ok = outcome is not None and not outcome.error
            columns[label_name].append(outcome.label if ok else None)
            columns[score_name].append(outcome.score if ok else None)
            for j, name in enumerate(prob_names):
                columns[name].append(outcome.probs[j] if ok else None)
            if ok:
                labels[outcome.label] = labels.get(outcome.label, 0) + 1
        columns[error_name] = errors
        failed = [e for e in errors if e]
        scorer.check()  # before the commit: a chunk scored by two models never lands
        done = {"parts": done["parts"] + 1, "rows": done["rows"] + len(chunk),
                "cursor": chunk.end.to_dict(), "scored": done["scored"] + len(chunk) - len(failed),
                "errors": done["errors"] + len(failed), "labels": labels,
                "first_errors": (done["first_errors"] + failed)[:FIRST_ERRORS]}
        work.commit(done["parts"] - 1, partial(writer.write, chunk=chunk, added=columns), done)
        progress.advance(len(chunk))
    scoring_seconds = time.perf_counter() - loop_started

    if done["rows"] != end - start:
        raise DataError(f"{config.input} ended after {start + done['rows']} rows, but held {end} "
                        f"when this run started; it changed. Start over with --restart.")
    extra = getattr(reader, "extra_fields", {})
    if extra and writer.fmt != "jsonl":
        progress.note(f"fields not in the first object, left out of {output.name} (JSONL output "
                      f"keeps them): " + ", ".join(f"{k!r} (first on line {v})" for k, v in extra.items()))
    parts = [work.part(k) for k in range(done["parts"])]
    work.publish(output, lambda f: writer.merge_parts(parts, f))
    work.remove()
    return ScoreSummary(
        output=output, rows=done["rows"], scored=done["scored"], errors=done["errors"],
        labels=done["labels"], first_errors=done["first_errors"], resumed_rows=resumed,
        seconds=time.perf_counter() - started, scoring_seconds=scoring_seconds,
        model=scorer.identity, shard=(config.shard_index, config.num_shards),
    )


# ---------------------------------------------------------------------------------------------
# Merging shards


class MergeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    output: Path
    num_shards: int = Field(..., ge=2)
    overwrite: bool = False


@dataclass
class MergeSummary:
    output: Path
    rows: int
    shard_rows: list[int] = field(default_factory=list)
    seconds: float = 0.0


def merge_shards(config: MergeConfig) -> MergeSummary:
    """The shard outputs of ``config.output``, concatenated in shard order into it: the input's
    rows in input order, each once."""
    started = time.perf_counter()
    fmt = io.output_format(config.output)
    shards = [shard_path(config.output, i, config.num_shards) for i in range(config.num_shards)]
    missing = [i for i, path in enumerate(shards) if not path.is_file()]
    running = [i for i, path in enumerate(shards) if default_work_dir(path).exists()]
    if missing or running:
        problems = []
        if missing:
            problems.append(f"shard(s) {_ranges(missing)} have no output yet (e.g. {shards[missing[0]].name})")
        if running:
            problems.append(f"shard(s) {_ranges(running)} have a run in progress or interrupted "
                            f"(e.g. {default_work_dir(shards[running[0]]).name})")
        raise UserError("cannot merge: " + "; ".join(problems) + ". Run those shards (the same "
                        "command with their --shard-index) to the end, then merge.")
    if config.output.exists() and not config.overwrite:
        raise UserError(f"{config.output} already exists: add --overwrite to replace it.")
    write_atomic(config.output, lambda f: io.concat_outputs(shards, fmt, f),
                 tmp=config.output.with_name(f".{config.output.name}.merge.tmp"))
    counts = [io.count_rows(path, fmt) for path in shards]
    return MergeSummary(output=config.output, rows=sum(counts), shard_rows=counts,
                        seconds=time.perf_counter() - started)


def _ranges(numbers: list[int]) -> str:
    shown = ", ".join(map(str, numbers[:10]))
    return shown + (f" and {len(numbers) - 10} more" if len(numbers) > 10 else "")
