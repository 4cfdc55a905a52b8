"""Atomic file writes: write to a temporary file beside the target, then rename it into place.

A crash (or SIGKILL) mid-write leaves either the old file or the new one, never half of one. Every
file the library and the stages write goes through :func:`atomic_path`; a folder that must appear
whole (the warm-up hand-off) is filled in a temporary folder by :func:`atomic_dir`.
"""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike, sync: bool = False) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; on success it replaces ``path``.

    Args:
        path: the file to (re)write; its folder is created if needed.
        sync: fsync the file before the rename (for state that must survive power loss).
    The temporary file gets the usual permissions (0666 less the umask), is removed if the block
    raises, and keeps ``path``'s suffix so that writers which infer a format from it still work.
    Temporary files of ``path`` left by a killed process (its pid is gone) are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        if sync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _remove_stale_temps(path: Path) -> None:
    """Delete ``.STEM.PID.tmpSUFFIX`` files beside ``path`` whose writer process is gone."""
    head, tail = f".{path.stem}.", f".tmp{path.suffix}"
    for stale in path.parent.glob(f"{glob.escape(head)}*{glob.escape(tail)}"):
        pid = stale.name[len(head) : -len(tail)]
        if pid.isdigit() and not alive(int(pid)):
            stale.unlink(missing_ok=True)


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists (another user's process counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def write_bytes(path: str | os.PathLike, data: bytes, sync: bool = False) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path, sync) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode())


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it replaces the folder ``path``.

    If the block or the swap raises, ``path`` keeps its old content and the temporary folder is
    removed. The swap is two renames (old out, new in), so a kill between them leaves no ``path``
    (the old content in ``.NAME.PID.old``) rather than a mix of old and new files.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    old = path.with_name(f".{path.name}.{os.getpid()}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if path.exists():
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old.exists():  # put the old folder back
                os.replace(old, path)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def link_or_copy(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Hard-link ``source`` at ``target`` (a file never rewritten in place, so sharing its inode is
    safe); copy it where the file system refuses links."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a folder, so that the renames and new names inside it survive a power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
