"""``dreamer/atomic.py``: a file or folder is replaced whole or not at all; a failed write leaves no
trace."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dreamer import atomic
from dreamer.atomic import atomic_dir, atomic_path, write_bytes, write_text

REPO = Path(__file__).resolve().parents[1]


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_bytes_and_text_round_trip_and_overwrite(tmp_path):
    data = bytes(range(256)) + b"\r\n\x00"
    write_bytes(tmp_path / "blob.bin", data)
    assert (tmp_path / "blob.bin").read_bytes() == data
    text = "return −1,200 ± 3 · naïve\nline two\r\n"
    write_text(str(tmp_path / "notes.txt"), text)  # a str path works too
    assert (tmp_path / "notes.txt").read_bytes() == text.encode("utf-8")  # UTF-8, no newline change
    write_text(tmp_path / "notes.txt", "short")
    assert (tmp_path / "notes.txt").read_text() == "short"  # replaced, not overwritten in place
    assert files_in(tmp_path) == ["blob.bin", "notes.txt"]


def test_missing_folders_are_created(tmp_path):
    target = tmp_path / "a" / "b" / "metrics.json"
    write_text(target, "{}\n")
    assert target.read_text() == "{}\n"


def test_temporary_file_is_beside_the_target_keeps_its_suffix_and_the_target_stays_old(tmp_path):
    target = tmp_path / "plots" / "returns.png"
    target.parent.mkdir()
    target.write_bytes(b"old")
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".png" and tmp != target
        tmp.write_bytes(b"half of the new")
        assert target.read_bytes() == b"old"  # nothing visible until the block succeeds
    assert target.read_bytes() == b"half of the new"
    assert files_in(target.parent) == ["returns.png"]


def test_a_new_file_appears_only_when_the_block_succeeds(tmp_path):
    target = tmp_path / "agent.pt"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"weights")
        assert not target.exists()
    assert target.read_bytes() == b"weights"


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_an_error_mid_write_keeps_the_old_file_and_removes_the_temporary_one(tmp_path, error):
    """Also for BaseExceptions (Ctrl-C): the block's exception propagates unchanged."""
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(type(error)):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise error
    assert target.read_text() == "old"
    assert files_in(tmp_path) == ["metrics.json"]


def test_write_bytes_failing_mid_write_leaves_no_trace(tmp_path, monkeypatch):
    target = tmp_path / "episodes.csv"
    target.write_bytes(b"old")

    def write_half_then_fail(self, data):
        with open(self, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError("No space left on device")

    monkeypatch.setattr(Path, "write_bytes", write_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        write_text(target, "return,length\n" * 100)
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert files_in(tmp_path) == ["episodes.csv"]
    monkeypatch.setattr(Path, "write_bytes", write_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        write_bytes(tmp_path / "new.bin", b"0123456789")  # a new file does not appear at all
    monkeypatch.undo()
    assert files_in(tmp_path) == ["episodes.csv"]


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_failing_fsync_or_rename_keeps_the_old_file(tmp_path, monkeypatch, failing):
    target = tmp_path / "state.pt"
    target.write_bytes(b"old")

    def fail(*args):
        raise OSError(f"{failing} failed")

    monkeypatch.setattr(atomic.os, failing, fail)
    with pytest.raises(OSError, match=f"{failing} failed"):
        write_bytes(target, b"new", sync=True)
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert files_in(tmp_path) == ["state.pt"]


def test_sync_fsyncs_the_complete_temporary_file_before_the_rename(tmp_path, monkeypatch):
    target = tmp_path / "state.pt"
    target.write_bytes(b"old")
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        # the descriptor is the temporary file's, complete, while the target is still the old one
        synced.append((os.pread(fd, 100, 0), target.read_bytes()))
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    write_bytes(target, b"new", sync=False)
    assert synced == []
    write_bytes(target, b"newer", sync=True)
    assert synced == [(b"newer", b"new")]
    assert target.read_bytes() == b"newer"


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_get_the_usual_permissions(tmp_path, umask):
    """0666 less the umask (a mkstemp-style temporary file would be 0600 whatever the umask)."""
    old = os.umask(umask)
    try:
        write_text(tmp_path / "metrics.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_sigkill_mid_write_leaves_the_old_file_whole(tmp_path):
    """The module's claim for a killed process: the target holds the old bytes, not half of new."""
    target = tmp_path / "state.pt"
    target.write_bytes(b"old" * 1000)
    script = (
        "import os, signal, sys\n"
        "from dreamer.atomic import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    with open(tmp, 'wb') as f:\n"
        "        f.write(b'new' * 500)\n"
        "        f.flush()\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    process = subprocess.run(
        [sys.executable, "-c", script, str(target)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
    )
    assert process.returncode == -signal.SIGKILL, process.stderr
    assert target.read_bytes() == b"old" * 1000


# --- atomic_dir: a folder that appears whole ------------------------------------------------------
def make_folder(path: Path, files: dict[str, str]) -> None:
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)


def folder_content(path: Path) -> dict[str, str]:
    return {p.relative_to(path).as_posix(): p.read_text() for p in path.rglob("*") if p.is_file()}


def test_atomic_dir_replaces_the_whole_folder_only_when_the_block_succeeds(tmp_path):
    out = tmp_path / "data" / "warmup"
    make_folder(out, {"meta.json": "old", "stale.csv": "old rows"})
    with atomic_dir(out) as tmp:
        assert tmp.parent == out.parent and tmp != out and list(tmp.iterdir()) == []
        (tmp / "replay").mkdir()
        (tmp / "replay" / "chunk.npz").write_text("new chunk")
        (tmp / "meta.json").write_text("new")
        assert folder_content(out) == {"meta.json": "old", "stale.csv": "old rows"}
    # the old folder's files are gone, not merged with the new ones
    assert folder_content(out) == {"meta.json": "new", "replay/chunk.npz": "new chunk"}
    assert files_in(out.parent) == ["warmup"]  # neither the temporary nor the old folder is left


def test_atomic_dir_creates_a_new_folder_and_its_parents(tmp_path):
    out = tmp_path / "a" / "b" / "warmup"
    with atomic_dir(out) as tmp:
        (tmp / "meta.json").write_text("{}")
        assert not out.exists()
    assert folder_content(out) == {"meta.json": "{}"}
    assert files_in(out.parent) == ["warmup"]


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_atomic_dir_error_in_the_block_keeps_the_old_folder(tmp_path, error):
    out = tmp_path / "warmup"
    make_folder(out, {"meta.json": "old"})
    with pytest.raises(type(error)):
        with atomic_dir(out) as tmp:
            (tmp / "meta.json").write_text("half")
            raise error
    assert folder_content(out) == {"meta.json": "old"}
    assert files_in(tmp_path) == ["warmup"]


def test_atomic_dir_starts_empty_even_over_a_leftover_of_this_process(tmp_path):
    out = tmp_path / "warmup"
    leftover = tmp_path / f".warmup.{os.getpid()}.tmp"
    make_folder(leftover, {"half.npz": "from a failed attempt"})
    with atomic_dir(out) as tmp:
        assert list(tmp.iterdir()) == []
        (tmp / "meta.json").write_text("new")
    assert folder_content(out) == {"meta.json": "new"}
    assert files_in(tmp_path) == ["warmup"]


def test_atomic_dir_killed_between_its_renames_leaves_no_folder_rather_than_a_mix(tmp_path):
    """The documented gap: SIGKILL after the old folder moved out, before the new one moved in."""
    out = tmp_path / "warmup"
    make_folder(out, {"meta.json": "old", "only_old.csv": "old"})
    script = (
        "import os, signal, sys\n"
        "from dreamer import atomic\n"
        "replace = os.replace\n"
        "def replace_then_die(src, dst):\n"
        "    replace(src, dst)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "atomic.os.replace = replace_then_die\n"
        "with atomic.atomic_dir(sys.argv[1]) as tmp:\n"
        "    (tmp / 'meta.json').write_text('new')\n"
    )
    process = subprocess.run(
        [sys.executable, "-c", script, str(out)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
    )
    assert process.returncode == -signal.SIGKILL, process.stderr
    assert not out.exists()


def test_temp_files_of_dead_writers_are_removed_by_the_next_write(tmp_path):
    """A killed writer's ``.NAME.PID.tmp.SUFFIX`` goes with the next write of that file; a live
    writer's temp (this process, or another running one) and other files' temps stay."""
    target = tmp_path / "state.pt"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".state.{dead.pid}.tmp.pt"
    live = tmp_path / f".state.{os.getppid()}.tmp.pt"
    other = tmp_path / f".other.{dead.pid}.tmp.pt"
    for path in (stale, live, other):
        path.write_bytes(b"partial")
    write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert not stale.exists() and live.exists() and other.exists()


def test_atomic_dir_puts_the_old_folder_back_when_the_swap_fails(tmp_path, monkeypatch):
    folder = tmp_path / "warmup"
    folder.mkdir()
    (folder / "meta.json").write_text("old")
    real_replace, calls = os.replace, []

    def replace(src, dst):  # the old folder moves out, then the new one fails to move in
        calls.append(Path(src).name)
        if len(calls) == 2:
            raise OSError("disk gone")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(OSError, match="disk gone"):
        with atomic_dir(folder) as tmp:
            (tmp / "meta.json").write_text("new")
    assert (folder / "meta.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["warmup"]
