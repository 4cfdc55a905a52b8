"""The replay buffer's files: checksummed ``.npz`` chunks of steps and the ``meta.json`` index.

A saved buffer is a folder of ``chunk_000000.npz, …`` (``chunk_size`` steps each, one ``.npy``
member per array) and ``meta.json`` (spec, ring position, and every chunk's member CRCs). The
ring (``replay.ReplayBuffer.save`` / ``load``) decides which chunks to write; this module writes
and reads one chunk or the index and refuses, with one line naming the file, anything missing,
damaged, of another format version, or that does not match the index.
"""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .atomic import atomic_path, write_bytes
from .envs import EnvSpec
from .errors import ReplayError

FORMAT_VERSION = 2  # 2: the stream of each step
CHUNK_PATTERN = "chunk_{:06d}.npz"


def write_chunk(path: Path, arrays: dict[str, np.ndarray]) -> dict[str, int]:
    """Write an ``.npz`` readable by ``np.load``, byte-identical for identical arrays.

    ``np.savez_compressed`` stamps the current time into the zip, so equal buffers would give
    different files (and DVC hashes); fixed timestamps keep saves reproducible. Deflate level 3
    shrinks CarRacing frames ~15× at ~240 MB/s (level 6: ~20× at half the speed).

    Returns:
        ``{array name: CRC-32 of its .npy member}``.
    """
    crcs = {}
    with atomic_path(path, sync=True) as tmp, zipfile.ZipFile(tmp, "w", allowZip64=True) as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16  # readable when unzipped by hand
            archive.writestr(info, member.getbuffer(), zipfile.ZIP_DEFLATED, compresslevel=3)
            crcs[name] = zlib.crc32(member.getbuffer())
    return crcs


def write_index(
    directory: Path, spec: EnvSpec, ring: tuple[int, int, int, int, int], chunks: dict
) -> None:
    """Write ``meta.json`` (synced: it comes after the chunks it lists) and delete chunk files it
    does not list.

    Args:
        ring: ``(capacity, chunk_size, size, cursor, total_steps)`` of the buffer.
        chunks: ``{chunk number: (rows, {array name: CRC})}`` of every chunk holding steps.
    """
    capacity, chunk_size, size, cursor, total_steps = ring
    meta = {
        "format_version": FORMAT_VERSION,
        "spec": spec.to_dict(),
        "capacity": capacity,
        "chunk_size": chunk_size,
        "size": size,
        "cursor": cursor,
        "total_steps": total_steps,
        "chunks": {
            CHUNK_PATTERN.format(c): {"rows": rows, "crc": crc} for c, (rows, crc) in chunks.items()
        },
    }
    write_bytes(directory / "meta.json", json.dumps(meta, indent=1).encode(), sync=True)
    for stale in set(directory.glob("chunk_*.npz")) - {directory / n for n in meta["chunks"]}:
        stale.unlink()


def read_index(directory: Path, spec: EnvSpec | None = None) -> dict:
    """``meta.json`` of a saved buffer, checked (:func:`read_meta`); with ``spec``, the stored
    spec must equal it (the error names the first field that differs)."""
    meta_path = directory / "meta.json"
    meta = read_meta(meta_path)
    stored = EnvSpec.from_dict(meta["spec"])
    if spec is not None and spec != stored:
        field = next(
            f.name
            for f in dataclasses.fields(EnvSpec)
            if getattr(spec, f.name) != getattr(stored, f.name)
        )
        raise ReplayError(
            f"{meta_path}: replay was recorded for another environment spec ({field}: stored "
            f"{getattr(stored, field)!r}, expected {getattr(spec, field)!r})"
        )
    return meta


def chunk_entries(directory: Path, meta: dict, rows: dict[int, int]) -> dict[int, dict]:
    """The CRCs of each chunk the ring needs (``rows``: ``{chunk: stored steps}``), after checking
    that ``meta.json`` lists exactly those chunks with those row counts."""
    meta_path = directory / "meta.json"
    expected = {CHUNK_PATTERN.format(c): c for c in rows}
    if set(meta["chunks"]) != set(expected):
        raise ReplayError(
            f"{meta_path}: corrupt replay metadata (chunks "
            f"{sorted(meta['chunks'])} do not cover the {meta['size']} steps)"
        )
    crcs = {}
    for name, chunk in expected.items():
        entry = meta["chunks"][name]
        if entry.get("rows") != rows[chunk] or not isinstance(entry.get("crc"), dict):
            raise ReplayError(f"{meta_path}: corrupt replay metadata (entry for {name})")
        crcs[chunk] = entry["crc"]
    return crcs


def read_meta(meta_path: Path) -> dict:
    if not meta_path.is_file():
        raise ReplayError(f"{meta_path}: missing replay metadata (no saved replay buffer here)")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReplayError(f"{meta_path}: corrupt replay metadata ({exc})") from None
    required = (
        "format_version",
        "spec",
        "capacity",
        "chunk_size",
        "size",
        "cursor",
        "total_steps",
        "chunks",
    )
    missing = [key for key in required if not isinstance(meta, dict) or key not in meta]
    if missing:
        raise ReplayError(f"{meta_path}: corrupt replay metadata (missing {missing[0]!r})")
    if meta["format_version"] != FORMAT_VERSION:
        raise ReplayError(
            f"{meta_path}: replay format version {meta['format_version']}, "
            f"this code reads {FORMAT_VERSION}"
        )
    capacity, size, cursor = meta["capacity"], meta["size"], meta["cursor"]
    counts = (capacity, meta["chunk_size"], size, cursor, meta["total_steps"])
    consistent = (
        all(isinstance(n, int) for n in counts)
        and capacity > 0
        and meta["chunk_size"] > 0
        and 0 <= size <= capacity
        and 0 <= cursor < capacity
        and meta["total_steps"] >= size
        and (size == capacity or cursor == size)
        and isinstance(meta["chunks"], dict)
    )
    if not consistent:
        raise ReplayError(
            f"{meta_path}: corrupt replay metadata (capacity {capacity}, size "
            f"{size}, cursor {cursor}, total_steps {meta['total_steps']})"
        )
    try:
        EnvSpec.from_dict(meta["spec"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ReplayError(f"{meta_path}: corrupt replay metadata (spec: {exc!r})") from None
    return meta


def read_chunk(
    path: Path, layout: dict[str, tuple[tuple[int, ...], np.dtype]], rows: int, crcs: dict
) -> dict[str, np.ndarray]:
    """Read and validate one chunk against the buffer layout and the CRCs in ``meta.json``."""
    if not path.is_file():
        raise ReplayError(f"{path}: missing replay chunk")
    try:
        with zipfile.ZipFile(path) as archive:
            found = {info.filename[: -len(".npy")]: info.CRC for info in archive.infolist()}
            if found != crcs:
                raise ReplayError(
                    f"{path}: replay chunk does not match meta.json (interrupted save?)"
                )
            arrays = {}
            for name, (shape, dtype) in layout.items():
                # ZipFile.read checks the CRC, so damaged bytes cannot load silently.
                member = io.BytesIO(archive.read(f"{name}.npy"))
                array = np.lib.format.read_array(member, allow_pickle=False)
                if array.shape != (rows, *shape) or array.dtype != dtype:
                    raise ReplayError(
                        f"{path}: {name} is {array.dtype}{array.shape}, expected "
                        f"{dtype}{(rows, *shape)}"
                    )
                arrays[name] = array
        return arrays
    except ReplayError:
        raise
    except Exception as exc:  # zipfile, zlib and numpy raise many types for damaged files
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise ReplayError(f"{path}: corrupt replay chunk ({detail})") from None
