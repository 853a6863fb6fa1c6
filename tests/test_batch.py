"""`textcls score` and `textcls score-merge`: every input row once, in order, in CSV, JSONL and
Parquet; rows that cannot be scored kept with their error; resume after SIGKILL; refusal of a
resume with other arguments or another model; shards that cover the input once and merge to the
unsharded output; `--url` against a real `bentoml serve` and retries against a fake service; bad
input exits 2 with a message."""

from __future__ import annotations

import csv
import http.server
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from batch import workdir as workdir_module
from batch.score import ScoreConfig, ScoreProgress, score
from batch.workdir import WorkDir
from core.errors import UserError
from processes import free_port, serve_command, serve_env, serving
from engine.bundle import Bundle
from engine.engine import Engine
from engine.options import EngineOptions
from textcls.cli import app

ROOT = Path(__file__).resolve().parents[1]
BENTOML = Path(sys.executable).with_name("bentoml")
runner = CliRunner()

WORDS = ("a great film with a dull plot the acting was superb awful boring wonderful stocks fell "
         "as markets rallied the team won the match new phone chip launched").split()


def make_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 30))) for _ in range(n)]


def write_rows(path: Path, rows: list[dict]) -> Path:
    suffix = path.suffix
    if suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=17)
    return path


def read_rows(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    return pq.read_table(path).to_pylist()


def cli(*args: str, env: dict | None = None):
    result = runner.invoke(app, ["score", *map(str, args)], env=env)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def fails(args: list, *needles: str, command: str = "score"):
    result = runner.invoke(app, [command, *map(str, args)])
    assert result.exit_code == 2, result.output + repr(result.exception)
    text = " ".join(result.output.split())  # rich wraps long messages
    for needle in needles:
        assert needle in text, text
    assert "Traceback" not in result.output
    return text


# ---------------------------------------------------------------------------------------------
# Rows, order, formats


@pytest.mark.parametrize("source", [".csv", ".jsonl", ".parquet"])
@pytest.mark.parametrize("target", [".csv", ".jsonl", ".parquet"])
def test_every_row_once_in_input_order_in_every_format(tiny_bundles, tmp_path, source, target):
    texts = make_texts(45)
    data = write_rows(tmp_path / f"in{source}", [{"id": i, "body": t} for i, t in enumerate(texts)])
    out = tmp_path / f"out{target}"
    result = cli(data, "-o", out, "--model", tiny_bundles["topic"], "--text-column", "body",
                 "--chunk-size", 20, "--threads", 1)
    rows = read_rows(out)
    assert [str(r["id"]) for r in rows] == [str(i) for i in range(45)]
    assert [r["body"] for r in rows] == texts
    assert list(rows[0]) == ["id", "body", "label", "score", "error"]
    # the same predictions as the engine gives these texts in the same chunks
    engine = Engine(Bundle.load(tiny_bundles["topic"]), threads=1)
    expected = [p for i in range(0, 45, 20) for p in engine.predict(texts[i: i + 20])]
    assert [r["label"] for r in rows] == [p.label for p in expected]
    assert [float(r["score"]) for r in rows] == pytest.approx([p.score for p in expected], abs=1e-6)
    assert all(r["error"] == "" for r in rows)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["rows"] == summary["scored"] == 45 and sum(summary["labels"].values()) == 45
    assert summary["rows_per_second"] > 0 and "rows/s" in result.output
    assert not (tmp_path / f"out{target}.work").exists()  # the work directory goes when done


def test_probabilities_are_every_class_and_agree_with_label_and_score(tiny_bundles, tmp_path):
    labels = Bundle.load(tiny_bundles["topic"]).labels
    data = write_rows(tmp_path / "in.csv", [{"text": t} for t in make_texts(30, seed=1)])
    out = tmp_path / "out.parquet"
    cli(data, "-o", out, "--model", tiny_bundles["topic"], "--probabilities")
    rows = read_rows(out)
    assert list(rows[0]) == ["text", "label", "score", *[f"prob_{x}" for x in labels], "error"]
    for row in rows:
        probs = {x: row[f"prob_{x}"] for x in labels}
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
        assert row["label"] == max(probs, key=probs.get) and row["score"] == max(probs.values())


# ---------------------------------------------------------------------------------------------
# Rows that cannot be scored


def test_unscorable_csv_rows_are_kept_in_place_with_their_error(tiny_bundles, tmp_path):
    data = tmp_path / "in.csv"
    data.write_bytes(b"id,text\n0,a great film\n1,\n2,   \n3,\"bad \xff\xfe bytes\"\n"
                     b"4,too,many,fields\n5,\"two\nlines\"\n\n6,the end\n")
    out = tmp_path / "out.csv"
    result = cli(data, "-o", out, "--task", "sentiment")
    rows = read_rows(out)
    assert len(rows) == 7  # the blank line is not a row
    errors = [r["error"] for r in rows]
    assert errors[0] == errors[5] == errors[6] == ""
    assert errors[1] == "line 3: empty text" and errors[2] == "line 4: empty text"
    assert errors[3].startswith("line 5: column 'text' is not valid UTF-8")
    assert rows[3]["text"] == "bad \ufffd\ufffd bytes"  # shown, not dropped
    assert errors[4] == "line 6: 4 fields where the header has 2"
    assert [r["id"] for r in rows] == ["0", "1", "2", "3", "", "5", "6"]
    assert rows[5]["text"] == "two\nlines" and rows[5]["label"]
    assert all(r["label"] == r["score"] == "" for r in rows[1:5])
    assert "4 rows not scored" in " ".join(result.output.split())


def test_unscorable_jsonl_and_parquet_rows_are_kept_with_their_error(tiny_bundles, tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_bytes(b'{"id": 0, "text": "a fine film"}\n{"id": 1, "text": "unclosed\n[1, 2]\n'
                     b'{"id": 3, "text": null}\n{"id": 4}\n{"id": 5, "text": 7}\n'
                     b'{"id": 6, "text": "bad \xff"}\n{"id": 7, "text": "fine again", "more": 1}\n')
    out = tmp_path / "out.jsonl"
    cli(data, "-o", out, "--task", "sentiment")
    rows = read_rows(out)
    assert len(rows) == 8
    errors = [r["error"] for r in rows]
    assert errors[0] == errors[7] == "" and rows[7]["more"] == 1  # JSONL keeps every field
    assert errors[1].startswith("line 2: not valid JSON")
    assert errors[2] == "line 3: an array, not a JSON object"
    assert errors[3] == "line 4: no text (column 'text' is null)"
    assert errors[4] == "line 5: no field 'text'"
    assert errors[5] == "line 6: column 'text' holds a number, not text"
    assert errors[6] == "line 7: not valid UTF-8"
    # CSV has no place for a field the first object lacks: the run says it left it out
    result = cli(data, "-o", tmp_path / "from-jsonl.csv", "--task", "sentiment")
    assert "'more' (first on line 8)" in " ".join(result.output.split())
    assert list(read_rows(tmp_path / "from-jsonl.csv")[0]) == ["id", "text", "label", "score", "error"]

    parquet = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": ["fine", None, "", "good"]}), parquet)
    cli(parquet, "-o", tmp_path / "out.csv", "--task", "sentiment")
    rows = read_rows(tmp_path / "out.csv")
    assert [r["error"] for r in rows] == ["", "row 1: no text (column 'text' is null)",
                                          "row 2: empty text", ""]


# ---------------------------------------------------------------------------------------------
# Resume


def _reference(tiny_bundles, data: Path, out: Path, *args) -> bytes:
    cli(data, "-o", out, "--model", tiny_bundles["sentiment"], "--threads", 1, *args)
    return out.read_bytes()


@pytest.mark.reliability
def test_sigkill_at_random_points_then_resume_writes_each_row_exactly_once(tiny_bundles, tmp_path):
    n, chunk = 12_000, 150
    data = write_rows(tmp_path / "in.csv", [{"id": i, "text": t} for i, t in enumerate(make_texts(n, 2))])
    args = ["--model", tiny_bundles["sentiment"], "--chunk-size", chunk, "--threads", 1,
            "--probabilities"]
    expected = _reference(tiny_bundles, data, tmp_path / "ref.csv", *args[2:])
    out = tmp_path / "out.csv"
    work = tmp_path / "out.csv.work"
    command = [sys.executable, "-m", "textcls.cli", "score", str(data), "-o", str(out), *map(str, args)]
    rng = random.Random(1234)
    kills = []
    for attempt in range(4):
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if attempt == 0:
            time.sleep(rng.uniform(0.3, 1.5))  # anywhere in start-up, counting or the first chunks
        else:  # somewhere after a random number of further commits, mid-chunk or mid-commit
            target, deadline = _parts(work) + rng.randint(1, 8), time.monotonic() + 120
            while proc.poll() is None and _parts(work) < target and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0, 0.05))
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills.append(_parts(work))
    assert len(kills) >= 3 and kills[-1] > 0, f"the runs finished before being killed: {kills}"
    assert not out.exists()
    final = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr[-3000:]
    summary = json.loads(final.stdout.strip().splitlines()[-1])
    assert summary["resumed_rows"] > 0 and summary["rows"] == n
    assert out.read_bytes() == expected  # every row once, in order, the same predictions
    assert not work.exists()


def _parts(work: Path) -> int:
    try:
        return json.loads((work / "progress.json").read_text())["parts"]
    except (OSError, ValueError):
        return 0


class Crash(BaseException):
    """A kill at a chosen point: nothing below it runs, as with SIGKILL (no finally cleans up)."""


@pytest.mark.reliability
@pytest.mark.parametrize("point", ["between part and progress", "before the output rename",
                                   "while deleting the work dir"])
def test_a_kill_between_commit_steps_is_resumed_exactly_once(tiny_bundles, tmp_path, monkeypatch, point):
    data = write_rows(tmp_path / "in.jsonl", [{"text": t} for t in make_texts(100, 3)])
    expected = _reference(tiny_bundles, data, tmp_path / "ref.jsonl", "--chunk-size", 30)
    out = tmp_path / "out.jsonl"
    calls = {"n": 0}

    def crash_on(target, nth):
        def wrapped(*a, **k):
            calls["n"] += 1
            if calls["n"] == nth:
                raise Crash(point)
            return target(*a, **k)
        return wrapped

    if point == "between part and progress":  # part 2 renamed into place, progress still at 2
        monkeypatch.setattr(workdir_module, "write_json_atomic",
                            crash_on(workdir_module.write_json_atomic, 4))
    elif point == "before the output rename":
        monkeypatch.setattr(WorkDir, "publish", crash_on(WorkDir.publish, 1))
    else:  # the output is in place; the work dir is aside, its parts half deleted
        monkeypatch.setattr(workdir_module, "_delete", crash_on(workdir_module._delete, 3))
    config = ScoreConfig(input=data, output=out, model=str(tiny_bundles["sentiment"]), chunk_size=30,
                         engine=EngineOptions(threads=1))
    with pytest.raises(Crash):
        score(config)
    monkeypatch.undo()
    if point == "between part and progress":
        assert (tmp_path / "out.jsonl.work" / "part-000002.jsonl").exists() and _parts(tmp_path / "out.jsonl.work") == 2
    if point == "while deleting the work dir":  # complete, but not with other arguments
        with pytest.raises(UserError, match="was written by a run with other arguments"):
            score(config.model_copy(update={"probabilities": True}))
    summary = score(config)
    assert out.read_bytes() == expected
    assert summary.rows == 100 and summary.scored == 100
    assert summary.resumed_rows == (60 if point == "between part and progress" else 100)
    assert not (tmp_path / "out.jsonl.work").exists() and not (tmp_path / "out.jsonl.work.done").exists()


def _interrupted_run(tiny_bundles, data: Path, out: Path, monkeypatch, *args) -> None:
    """A run killed after its first committed chunk."""
    original = WorkDir.commit

    def commit_once(self, index, write, progress):
        original(self, index, write, progress)
        raise Crash("killed")

    monkeypatch.setattr(WorkDir, "commit", commit_once)
    with pytest.raises(Crash):
        runner.invoke(app, ["score", str(data), "-o", str(out), *map(str, args)], catch_exceptions=False)
    monkeypatch.undo()


def test_resume_with_other_arguments_or_another_model_is_refused(tiny_bundles, tmp_path, monkeypatch):
    data = write_rows(tmp_path / "in.csv", [{"text": t} for t in make_texts(80, 4)])
    out = tmp_path / "out.csv"
    first = ["--model", tiny_bundles["sentiment"], "--chunk-size", 20]
    _interrupted_run(tiny_bundles, data, out, monkeypatch, *first)
    assert _parts(tmp_path / "out.csv.work") == 1

    fails([data, "-o", out, *first, "--probabilities"], "--probabilities: was False, now True",
          "add --restart to discard its 20 committed rows")
    fails([data, "-o", out, *first[:2], "--chunk-size", 10], "--chunk-size: was 20, now 10")
    other = Bundle.load(tiny_bundles["topic"])
    fails([data, "-o", out, "--model", tiny_bundles["topic"], "--chunk-size", 20],
          f"model version: was '{Bundle.load(tiny_bundles['sentiment']).version}', now '{other.version}'",
          "model task: was 'sentiment', now 'topic'")
    data.write_text(data.read_text() + "one more row\n")  # the input itself changed
    fails([data, "-o", out, *first], "the input file's size in bytes: was")

    result = cli(data, "-o", out, *first, "--restart")
    assert json.loads(result.stdout.strip().splitlines()[-1])["resumed_rows"] == 0
    assert len(read_rows(out)) == 81


def test_a_second_run_on_the_same_output_is_refused_while_one_runs(tiny_bundles, tmp_path):
    data = write_rows(tmp_path / "in.csv", [{"text": "fine"}])
    holder = WorkDir(tmp_path / "out.csv.work", ".csv")
    holder.open()
    try:
        fails([data, "-o", tmp_path / "out.csv", "--task", "sentiment"],
              f"another run (pid {os.getpid()}) is writing")
    finally:
        holder.close()


# ---------------------------------------------------------------------------------------------
# Shards


# Parquet input: shards start inside a row group (groups of 17 rows, chunks of 25); JSONL: at a byte offset
@pytest.mark.parametrize("source, suffix", [(".parquet", ".csv"), (".jsonl", ".parquet")])
def test_three_shards_cover_the_input_once_and_merge_to_the_unsharded_output(tiny_bundles, tmp_path,
                                                                              source, suffix):
    n = 230
    data = write_rows(tmp_path / f"in{source}", [{"id": i, "text": t} for i, t in enumerate(make_texts(n, 5))])
    args = ["--model", tiny_bundles["topic"], "--chunk-size", 25, "--threads", 1]
    unsharded = tmp_path / f"all{suffix}"
    cli(data, "-o", unsharded, *args)
    out = tmp_path / f"scored{suffix}"
    seen = []
    for index in range(3):  # as three pods of an Indexed Job: the index and count from the env
        cli(data, "-o", out, *args, "--work-dir", tmp_path / "work",
            env={"JOB_COMPLETION_INDEX": str(index), "TEXTCLS_NUM_SHARDS": "3"})
        shard = tmp_path / f"scored.shard-{index:05d}-of-00003{suffix}"
        ids = [int(r["id"]) for r in read_rows(shard)]
        assert ids == sorted(ids) and len(ids) >= 75  # contiguous whole chunks: 10 chunks as 3+3+4
        seen += ids
    assert seen == list(range(n))  # the union is the input, once, in order
    assert list((tmp_path / "work").iterdir()) == []  # each shard's own work dir, gone when done
    merged = runner.invoke(app, ["score-merge", str(out)], env={"TEXTCLS_NUM_SHARDS": "3"})
    assert merged.exit_code == 0, merged.output
    assert json.loads(merged.stdout.strip().splitlines()[-1])["rows"] == n
    if suffix == ".csv":
        assert out.read_bytes() == unsharded.read_bytes()
    else:
        assert pq.read_table(out).equals(pq.read_table(unsharded), check_metadata=True)
    fails([out, "--num-shards", 3], "already exists", "--overwrite", command="score-merge")


def test_merge_refuses_missing_or_unfinished_shards(tiny_bundles, tmp_path):
    data = write_rows(tmp_path / "in.csv", [{"text": t} for t in make_texts(10)])
    out = tmp_path / "scored.csv"
    cli(data, "-o", out, "--task", "sentiment", "--chunk-size", 2, "--shard-index", 1, "--num-shards", 3)
    (tmp_path / "scored.shard-00002-of-00003.csv.work").mkdir()
    fails([out, "--num-shards", 3], "shard(s) 0, 2 have no output yet",
          "shard(s) 2 have a run in progress or interrupted", command="score-merge")
    fails([out, "--num-shards", 1], "--num-shards", command="score-merge")


# ---------------------------------------------------------------------------------------------
# Through a service


@pytest.fixture(scope="module")
def server(tiny_bundles, tmp_path_factory):
    """`bentoml serve` of the project on a free port, serving the store's tiny bundles."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with serving(serve_command(port), f"{url}/readyz", tmp_path_factory.mktemp("serve") / "serve.log",
                 env=serve_env(), what="bentoml serve"):
        yield url


def test_url_mode_scores_every_row_through_the_service(server, tiny_bundles, tmp_path):
    texts = make_texts(150, 6)
    rows_in = [{"id": i, "text": t} for i, t in enumerate(texts)]
    rows_in[40]["text"] = ""  # never sent: the service would refuse the whole request
    data = write_rows(tmp_path / "in.csv", rows_in)
    out = tmp_path / "out.jsonl"
    result = cli(data, "-o", out, "--url", server, "--task", "topic", "--concurrency", 3,
                 "--request-size", 16, "--chunk-size", 64, "--probabilities")
    rows = read_rows(out)
    assert [r["id"] for r in rows] == [str(i) for i in range(150)]
    assert rows[40]["error"] == "line 42: empty text" and rows[40]["label"] is None
    bundle = Bundle.load(tiny_bundles["topic"])
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["model"]["version"] == bundle.version and summary["scored"] == 149
    local = tmp_path / "local.jsonl"
    cli(data, "-o", local, "--task", "topic", "--chunk-size", 64, "--probabilities")
    same = sum(a["label"] == b["label"] for a, b in zip(rows, read_rows(local), strict=True))
    assert same >= 145  # one model; int8 answers move slightly with batch neighbours


def test_url_mode_resumes_an_in_process_run_of_the_same_model(server, tiny_bundles, tmp_path, monkeypatch):
    data = write_rows(tmp_path / "in.csv", [{"text": t} for t in make_texts(60, 7)])
    out = tmp_path / "out.csv"
    _interrupted_run(tiny_bundles, data, out, monkeypatch, "--task", "topic", "--chunk-size", 20)
    result = cli(data, "-o", out, "--url", server, "--task", "topic", "--chunk-size", 20)
    assert json.loads(result.stdout.strip().splitlines()[-1])["resumed_rows"] == 20
    assert len(read_rows(out)) == 60


class FakeService(http.server.BaseHTTPRequestHandler):
    """A stand-in for the service: answers POSTs as `script` says ("503", "drop", then "ok")."""

    script: ClassVar[list[str]] = []
    posts: ClassVar[list[int]] = []
    retry_after: ClassVar[str] = "1"

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/metrics":
            self._send(200, b'# TYPE textcls_model_info gauge\ntextcls_model_info{task="sentiment",'
                            b'version="fake1",variant="int8",provider="CPU"} 1.0\n')
        else:
            self._send(200, b'"ready"')

    def do_POST(self) -> None:
        texts = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["texts"]
        step = type(self).script.pop(0) if type(self).script else "ok"
        type(self).posts.append(len(texts))
        if step == "503":
            self._send(503, b'{"error": "overloaded", "type": "overloaded"}',
                       {"Retry-After": type(self).retry_after})
        elif step == "drop":
            self.close_connection = True  # no answer at all: the client sees the connection close
        else:
            answers = [{"label": "positive" if len(t) % 2 else "negative", "score": 0.75,
                        "scores": {"negative": 0.25 if len(t) % 2 else 0.75,
                                   "positive": 0.75 if len(t) % 2 else 0.25}} for t in texts]
            self._send(200, json.dumps(answers).encode())


@pytest.fixture
def fake_service():
    FakeService.script, FakeService.posts, FakeService.retry_after = [], [], "1"
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeService)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class Notes(ScoreProgress):
    def __init__(self) -> None:
        self.notes: list[str] = []

    def note(self, message: str) -> None:
        self.notes.append(message)


def test_url_mode_retries_503_with_retry_after_and_dropped_connections(fake_service, tmp_path):
    FakeService.script = ["503", "503", "ok", "drop"]  # the probe waits twice; then a chunk's request drops
    data = write_rows(tmp_path / "in.csv", [{"text": t} for t in make_texts(20, 8)])
    notes = Notes()
    started = time.monotonic()
    summary = score(ScoreConfig(input=data, output=tmp_path / "out.csv", url=fake_service,
                                task="sentiment", retries=3, backoff=0.01, request_size=8,
                                concurrency=1), progress=notes)
    assert time.monotonic() - started >= 2.0  # Retry-After: 1, twice
    assert summary.rows == summary.scored == 20 and summary.model["version"] == "fake1"
    assert next(n for n in notes.notes if "HTTP 503" in n).endswith("try 2 of 4 in 1.0 s")
    assert any("RemoteProtocolError" in n for n in notes.notes)
    assert FakeService.posts == [1, 1, 1, 8, 8, 8, 4]  # probe x3, then 8 sent twice, 8, 4
    rows = read_rows(tmp_path / "out.csv")
    assert [r["label"] for r in rows] == ["positive" if len(r["text"]) % 2 else "negative" for r in rows]


def test_url_mode_gives_up_after_its_retries_with_a_message(fake_service, tmp_path):
    FakeService.script, FakeService.retry_after = ["503"] * 10, "0"
    data = write_rows(tmp_path / "in.csv", [{"text": "fine"}])
    fails([data, "-o", tmp_path / "out.csv", "--url", fake_service, "--task", "sentiment",
           "--retries", 2], "HTTP 503 (overloaded), 3 tries", "run the same command again to resume")


# ---------------------------------------------------------------------------------------------
# Bad input: exit 2, a message saying what to fix, no traceback


def test_bad_input_is_refused_with_a_clear_message(tiny_bundles, tmp_path):
    data = write_rows(tmp_path / "in.csv", [{"review": "fine", "label": "x"}])
    out = tmp_path / "out.csv"
    model = ["--model", tiny_bundles["sentiment"]]
    fails([tmp_path / "nope.csv", "-o", out, *model], "input file", "nope.csv does not exist")
    fails([data, "-o", out, *model], "no column 'text'", "['review', 'label']", "--text-column")
    (tmp_path / "in.xlsx").write_text("x")
    fails([tmp_path / "in.xlsx", "-o", out, *model], "unsupported input file type '.xlsx'")
    fails([data, "-o", tmp_path / "out.xlsx", *model, "--text-column", "review"],
          "unsupported output file type '.xlsx'")
    fails([data, "-o", out], "give either --task", "or --model")
    fails([data, "-o", out, "--task", "sentiment", *model], "give either --task")
    fails([data, "-o", out, "--url", "http://127.0.0.1:9", "--model", "x"], "Give --task, not --model")
    fails([data, "-o", out, "--url", "localhost:3000", "--task", "topic"], "--url:", "not an http://")
    fails([data, "-o", out, *model, "--text-column", "review"], "already has the column(s) ['label']",
          "--column-prefix")
    fails([data, "-o", out, *model, "--shard-index", 3, "--num-shards", 3], "--shard-index",
          "not below --num-shards 3")
    fails([data, "-o", out, "--task", "nosuchtask", "--text-column", "review"],
          "no model 'nosuchtask:latest'")
    (tmp_path / "empty.csv").write_text("")
    fails([tmp_path / "empty.csv", "-o", out, *model], "is empty: it has no header row")
    parquet = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": [1, 2]}), parquet)
    fails([parquet, "-o", out, *model], "column 'text' holds int64, not text")
    port = free_port()  # nothing listens there
    fails([data, "-o", out, "--url", f"http://127.0.0.1:{port}", "--task", "sentiment",
           "--text-column", "review", "--retries", 0], "ConnectError", "Is the service running")
    fails([data, "-o", data, *model, "--text-column", "review", "--column-prefix", "p_"],
          "is the input file")
    cli(data, "-o", out, *model, "--text-column", "review", "--column-prefix", "pred_")
    assert list(read_rows(out)[0]) == ["review", "label", "pred_label", "pred_score", "pred_error"]
    fails([data, "-o", out, *model, "--text-column", "review", "--column-prefix", "pred_"],
          "already exists", "--overwrite")


# ---------------------------------------------------------------------------------------------
# Long texts: --long-texts and --max-windows


def test_long_texts_are_scored_by_the_rule_asked_for_and_it_is_recorded(tiny_bundles, tmp_path):
    from dataclasses import replace

    long = ["the acting was superb and the plot was wonderful " * 20, "stocks fell as markets rallied " * 30]
    texts = [*make_texts(10, 7), *long]
    data = write_rows(tmp_path / "in.parquet", [{"text": t} for t in texts])
    out = tmp_path / "out.parquet"
    result = cli(data, "-o", out, "--model", tiny_bundles["sentiment"], "--long-texts", "chunk",
                 "--max-windows", 2, "--threads", 1)
    rows = read_rows(out)
    bundle = Bundle.load(tiny_bundles["sentiment"])
    engine = Engine(bundle, threads=1, long_texts=replace(bundle.long_texts, rule="chunk", max_windows=2))
    expected = engine.run(texts)  # one chunk of rows: the same batch
    assert expected.windows[-2:] == [2, 2]
    assert [r["label"] for r in rows] == [p.label for p in expected.predictions]
    assert [r["score"] for r in rows] == pytest.approx([p.score for p in expected.predictions], abs=1e-6)
    # the bundle's own rule (truncate) reads only the start of the long texts: other scores there
    truncated = Engine(bundle, threads=1).predict(texts)
    for row, by_chunk, by_truncate, windows in zip(rows, expected.predictions, truncated, expected.windows):
        if windows == 1:
            assert by_chunk.score == pytest.approx(by_truncate.score, abs=1e-6)
        else:
            assert abs(row["score"] - by_truncate.score) > 1e-6
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["model"]["long_texts"] == "chunk (at most 2 windows, 32 tokens shared)"
    recorded = json.loads(pq.read_schema(out).metadata[b"textcls.score"])
    assert recorded["model"]["long_texts"] == summary["model"]["long_texts"]
    # without the options: the rule the bundle records
    default = cli(data, "-o", tmp_path / "default.csv", "--model", tiny_bundles["sentiment"])
    assert json.loads(default.stdout.strip().splitlines()[-1])["model"]["long_texts"] == bundle.long_texts.rule


def test_long_text_options_are_refused_with_url_or_out_of_range_and_a_resume_must_keep_them(
        tiny_bundles, tmp_path, monkeypatch):
    data = write_rows(tmp_path / "in.csv", [{"text": t} for t in make_texts(40, 5)])
    out = tmp_path / "out.csv"
    model = ["--model", tiny_bundles["sentiment"]]
    fails([data, "-o", out, "--url", "http://127.0.0.1:9", "--task", "sentiment", "--long-texts", "chunk"],
          "--long-texts and --max-windows set how this process's engine reads long texts",
          "TEXTCLS_LONG_TEXTS")
    fails([data, "-o", out, "--url", "http://127.0.0.1:9", "--task", "sentiment", "--max-windows", 2],
          "with --url the service reads them by its own rule")
    fails([data, "-o", out, *model, "--long-texts", "middle"], "Invalid value for '--long-texts'")
    fails([data, "-o", out, *model, "--max-windows", 0], "Invalid value for '--max-windows'")
    with pytest.raises(Exception, match="max_windows"):
        ScoreConfig(input=data, output=out, model="m", engine={"max_windows": 0})

    first = [*model, "--chunk-size", 20, "--long-texts", "chunk"]
    _interrupted_run(tiny_bundles, data, out, monkeypatch, *first)
    fails([data, "-o", out, *model, "--chunk-size", 20], "--long-texts: was 'chunk', now None",
          "add --restart")
    fails([data, "-o", out, *first, "--max-windows", 2], "--max-windows: was None, now 2")
    result = cli(data, "-o", out, *first)
    assert json.loads(result.stdout.strip().splitlines()[-1])["resumed_rows"] == 20
