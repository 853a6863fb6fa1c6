"""The work directory of a resumable scoring run, beside its output (``OUTPUT.work/``).

    lock             flock'ed while a run writes here, so two runs never write one output
    state.json       the run's arguments, model and row range; written once, before any part
    progress.json    how many parts are committed, where the reader resumes, running counts
    part-000000.csv  the committed rows, one chunk per part, in the output's format

Committing part k: write ``.part-k.tmp``, fsync, rename it to ``part-k``, fsync the directory;
then replace progress.json the same way. progress.json is the only record of what is committed:
a part file beyond it (a kill between the two renames) is deleted on resume and its chunk scored
again, so every row lands in the output exactly once. Finishing: the parts are merged into a
temporary file beside OUTPUT and renamed over it, and the work directory is renamed aside
(``OUTPUT.work.done``) and deleted, its state and progress last. A SIGKILL at any point leaves
this directory (run again to resume), or the finished OUTPUT, with at most the aside directory
whose state tells a run again that OUTPUT is complete.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
from pathlib import Path
from collections.abc import Callable
from typing import Any, BinaryIO

from core.errors import UserError

STATE = "state.json"
PROGRESS = "progress.json"
LOCK = "lock"
STATE_FORMAT = 1


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable: the rename itself lives in the directory's own data."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, write: Callable[[BinaryIO], None], *, tmp: Path | None = None) -> None:
    """``path`` holds either its old content or all of the new one, whenever the process dies."""
    tmp = tmp or path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, lambda f: f.write(json.dumps(data, indent=1, sort_keys=True).encode()))


class WorkDir:
    def __init__(self, path: Path, part_suffix: str) -> None:
        self.path = path
        self.part_suffix = part_suffix
        self._lock_fd: int | None = None

    @property
    def aside(self) -> Path:
        """Where a finished run's directory is moved before it is deleted."""
        return self.path.with_name(self.path.name + ".done")

    def has_state(self) -> bool:
        return (self.path / STATE).is_file()

    def finished(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """State and progress of a finished run that was killed while deleting its directory."""
        try:
            state = json.loads((self.aside / STATE).read_text())
        except (OSError, ValueError):
            return None
        try:
            progress = json.loads((self.aside / PROGRESS).read_text())
        except (OSError, ValueError):
            progress = {}
        return state, progress

    def remove_leftovers(self) -> None:
        if self.aside.exists():
            shutil.rmtree(self.aside, ignore_errors=True)

    def open(self) -> None:
        """Create the directory if needed and take its lock (released when the process ends,
        however it ends)."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise UserError(
                    f"another run (pid {holder}) is writing {self.path}: two runs must not write "
                    "one output. Wait for it to finish or stop it, then run again to resume."
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def clear(self) -> None:
        """Forget the run recorded here (everything but the lock)."""
        for entry in self.path.iterdir():
            if entry.name == LOCK:
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def state(self) -> dict[str, Any] | None:
        return self._read(STATE)

    def write_state(self, state: dict[str, Any]) -> None:
        write_json_atomic(self.path / STATE, {**state, "format": STATE_FORMAT})

    def progress(self) -> dict[str, Any] | None:
        return self._read(PROGRESS)

    def _read(self, name: str) -> dict[str, Any] | None:
        path = self.path / name
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:  # written atomically, so only a hand edit does this
            raise UserError(f"{path} is not valid JSON ({exc}); delete {self.path} to start over.") from None

    def part(self, index: int) -> Path:
        return self.path / f"part-{index:06d}{self.part_suffix}"

    def drop_uncommitted(self, committed: int) -> None:
        """Delete temporary files and parts beyond the committed ones: a kill left them."""
        for entry in self.path.iterdir():
            if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                entry.unlink()
            elif entry.name.startswith("part-") and entry.name.endswith(self.part_suffix):
                index = entry.name[len("part-"): -len(self.part_suffix)]
                if not index.isdigit() or int(index) >= committed:
                    entry.unlink()

    def commit(self, index: int, write: Callable[[BinaryIO], None], progress: dict[str, Any]) -> None:
        write_atomic(self.part(index), write)
        write_json_atomic(self.path / PROGRESS, progress)

    def publish(self, output: Path, write: Callable[[BinaryIO], None]) -> None:
        """Write the final output through a temporary file beside it (a rename cannot cross file
        systems, and the work directory may be elsewhere), then rename it into place."""
        write_atomic(output, write)

    def remove(self) -> None:
        """Delete the directory of a finished run. Moved aside first, so a kill half-way through
        the deletion never leaves a directory that looks like a run to resume; its state goes last,
        so until then a run again can tell that the output is complete (``finished``)."""
        if self.aside.exists():
            shutil.rmtree(self.aside)
        os.replace(self.path, self.aside)
        self.close()
        for entry in sorted(self.aside.iterdir(), key=lambda e: (e.name in (PROGRESS, STATE), e.name == STATE)):
            _delete(entry)
        self.aside.rmdir()


def _delete(entry: Path) -> None:
    if entry.is_dir():
        shutil.rmtree(entry)
    else:
        entry.unlink()
