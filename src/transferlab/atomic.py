"""Atomic writes: an artifact is either complete or absent, never half-written."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from transferlab.errors import DataError, first_line


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it onto `target` (file or directory).

    A target that cannot be written (a read-only folder, a parent that is a file) fails with a
    one-line DataError before any work is written; an earlier `target` stays as it was until the
    new one is complete.
    """
    target = Path(target)
    workdir = _workdir_beside(target)
    tmp = workdir / target.name
    try:
        yield tmp
        _readable(tmp)
        _swap_in(tmp, target, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _workdir_beside(target: Path) -> Path:
    """A private temporary folder in target's folder, so the final rename stays on one file system."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as exc:
        blocker = next((p for p in target.parents if p.exists()), None)
        reason = (f"{blocker} is a file, not a folder" if blocker is not None and not blocker.is_dir()
                  else exc.strerror or first_line(exc))
        raise DataError(f"{target}: cannot write here ({reason})") from None


def _readable(tmp: Path) -> None:
    """Every file of the artifact with the mode the umask gives a new file: safetensors writes its
    files 0600, so exported or trained weights were unreadable to another account serving them."""
    mode = 0o666 & ~_umask()
    for path in [tmp] if tmp.is_file() else tmp.rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.chmod(path, mode)


def _umask() -> int:
    """This process's umask, read without setting it (os.umask sets it, for every thread at once)."""
    status = Path("/proc/self/status")
    for line in status.read_text().splitlines() if status.is_file() else []:
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    return 0o022


def _swap_in(tmp: Path, target: Path, workdir: Path) -> None:
    """Rename `tmp` onto `target`. A directory cannot be renamed over a non-empty one, so an old
    directory is first moved aside into `workdir` (deleted with it) and put back if the swap fails,
    rather than deleted first: a reader never sees a half-deleted artifact."""
    if not target.is_dir() or target.is_symlink():
        os.replace(tmp, target)
        return
    aside = workdir / f"{target.name}.old"
    os.replace(target, aside)
    try:
        os.replace(tmp, target)
    except OSError:
        os.replace(aside, target)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
