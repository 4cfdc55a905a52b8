"""Replay buffer: a preallocated ring of environment steps, sampled as contiguous windows.

Time convention. Step ``t`` stores the observation ``obs[t]`` together with what led to it::

    env call:      reset()     step(a0)    step(a1)    step(a2)     reset()     step(b0)
                      │           │           │           │            │           │
    t:                0           1           2           3            4           5
    obs[t]:           o0          o1          o2          o3           p0          p1
    action[t]:        0           a0          a1          a2           0           b0
    reward[t]:        0           r1          r2          r3           0           s1
    is_first[t]:      1           0           0           0            1           0
    is_last[t]:       0           0           0           1            0           0
    is_terminal[t]:   0           0           0           1 (or 0 if   0           0
                                                           truncated)

* ``action[t]`` is the action that led to ``obs[t]`` (zeros where ``is_first``);
* ``reward[t]`` is the reward received on arriving at ``obs[t]`` (0 where ``is_first``);
* ``is_last[t]``: the episode ended at ``obs[t]`` (terminated or truncated);
* ``is_terminal[t]``: it ended because the MDP terminated (no bootstrapping), not truncation;
* ``stream[t]``: the env that produced the step (one replay stream per env, as the official code).

Sampling draws windows of ``T`` contiguous steps uniformly from all windows that lie inside the
stored steps in insertion order and inside one stream; a window never spans the ring's seam
(between the newest and the oldest step). With several envs each env's steps enter the ring in
runs (``loop.Collector``) and windows are redrawn until they lie inside one run; only while no run
is long enough yet (a short warm-up) does a window keep its draw, and it then reads as two
episodes at the change of stream (:meth:`ReplayBuffer.gather`). Windows may cross episode
boundaries — the world model resets its state wherever ``is_first`` is set — and ``is_first``
is forced to True at position 0 of every window, because the model has no context from before
the window and must start from its initial state there.
``action[0]`` and ``reward[0]`` of a window that starts mid-episode keep their stored values; the
model ignores the action at ``is_first`` steps.

Replay context (official ``replay_context: 1``). The trainer samples windows one step longer and
keeps, per stored step, an RSSM posterior state (:meth:`ReplayBuffer.attach_latents`): first the
one the policy computed when it acted on the step's observation (``loop.Collector``), then the one
the last update computed for it. The extra first step of a window is not trained on, its stored
latent is the window's starting state, and the update writes its new posteriors back. A step the
policy never acted on (random warm-up steps, an episode's last observation) has no latent until
an update replays it, nor one after it is overwritten; there the window starts from the zero state
as above. The latents are not part of the saved chunk files (they depend on
the model, not the environment); the trainer's checkpoint carries them.

Memory: one step takes :attr:`ReplayBuffer.bytes_per_step` bytes — the image bytes
``H·W·C`` per image key, plus 4 bytes per vector feature, per action dimension and for the
reward, plus 3 flag bytes and 2 stream bytes (12,309 bytes for one 64×64×3 image and 3
actions). Arrays are
allocated with ``np.zeros`` up front, which the OS maps lazily, so an unfilled capacity costs
address space rather than resident memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .atomic import link_or_copy
from .envs import EnvSpec
from .errors import ReplayError
from .replay_files import (
    CHUNK_PATTERN,
    chunk_entries,
    read_chunk,
    read_index,
    write_chunk,
    write_index,
)

_FLAGS = ("is_first", "is_last", "is_terminal")
_REDRAWS = 20  # rejection rounds for windows inside one stream (ReplayBuffer.sample_index)


class Batch(NamedTuple):
    """A batch of ``B`` windows of ``T`` contiguous steps (time convention: module docstring).

    Attributes:
        obs: per key, images ``(B, T, H, W, C)`` uint8 or vectors ``(B, T, V)`` float32.
        action: ``(B, T, A)`` float32, the action that led to each observation.
        reward: ``(B, T)`` float32, received on arriving at each observation.
        is_first: ``(B, T)`` bool, True at every episode start and at ``t = 0``.
        is_last: ``(B, T)`` bool, the episode ended here.
        is_terminal: ``(B, T)`` bool, the episode terminated here (not truncated).
    """

    obs: dict[str, torch.Tensor]
    action: torch.Tensor
    reward: torch.Tensor
    is_first: torch.Tensor
    is_last: torch.Tensor
    is_terminal: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """The batch with every tensor on ``device`` (itself where they already are there).

        ``non_blocking`` copies from pinned memory (``ReplayBuffer.sample(pin_memory=True)``)
        overlap with the device's work instead of waiting for it."""
        return Batch(
            *(
                {k: v.to(device, non_blocking=non_blocking) for k, v in field.items()}
                if isinstance(field, dict)
                else field.to(device, non_blocking=non_blocking)
                for field in self
            )
        )

    def from_step(self, k: int) -> Batch:
        """Steps ``k…T−1`` of every window (views), flags as stored."""
        return Batch(
            *(
                {key: v[:, k:] for key, v in field.items()}
                if isinstance(field, dict)
                else field[:, k:]
                for field in self
            )
        )

    @classmethod
    def zeros(cls, spec: EnvSpec, batch_size: int, length: int) -> Batch:
        """An all-zero batch of the stored dtypes, ``is_first`` at ``t = 0`` (for compiling)."""
        B, T = batch_size, length
        arrays = {
            name: torch.zeros((B, T, *shape), dtype=_TORCH_DTYPES[dtype])
            for name, (shape, dtype) in _layout(spec).items()
        }
        arrays["is_first"][:, 0] = True
        obs = {name[len("obs/") :]: v for name, v in arrays.items() if name.startswith("obs/")}
        return cls(
            obs,
            arrays["action"],
            arrays["reward"],
            arrays["is_first"],
            arrays["is_last"],
            arrays["is_terminal"],
        )


class Latents(NamedTuple):
    """Stored RSSM states of replayed steps (replay context), host arrays.

    Attributes: deter ``(..., D)`` float16; stoch ``(..., S)`` int16 class indices; valid ``(...)``
    bool, False where neither the policy nor an update has computed a state for the step yet.
    """

    deter: np.ndarray
    stoch: np.ndarray
    valid: np.ndarray


_TORCH_DTYPES = {
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.float32): torch.float32,
    np.dtype(np.bool_): torch.bool,
    np.dtype(np.int16): torch.int16,
}


def _layout(spec: EnvSpec) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Per stored array: the shape of one step and the dtype."""
    layout = {}
    for key, shape in spec.obs_shapes.items():
        dtype = np.uint8 if key in spec.image_keys else np.float32
        layout[f"obs/{key}"] = (tuple(shape), np.dtype(dtype))
    layout["action"] = ((spec.action_dim,), np.dtype(np.float32))
    layout["reward"] = ((), np.dtype(np.float32))
    for flag in _FLAGS:
        layout[flag] = ((), np.dtype(np.bool_))
    layout["stream"] = ((), np.dtype(np.int16))
    return layout


class ReplayBuffer:
    """Fixed-capacity ring buffer of steps, saved to disk in chunks of ``chunk_size`` steps.

    Args:
        spec: the environment spec (observation keys and shapes, action size).
        capacity: maximum number of stored steps; the oldest are overwritten beyond it.
        chunk_size: steps per file when saving (``chunk_000000.npz``, ...).
    """

    def __init__(self, spec: EnvSpec, capacity: int, chunk_size: int = 4096):
        if capacity < 1 or chunk_size < 1:
            raise ValueError(
                f"replay: capacity and chunk_size must be positive, got {capacity} and {chunk_size}"
            )
        self.spec = spec
        self.capacity = capacity
        self.chunk_size = chunk_size
        self._layout = _layout(spec)
        self._data = {
            name: np.zeros((capacity, *shape), dtype)
            for name, (shape, dtype) in self._layout.items()
        }
        self._cursor = 0  # physical index the next step is written to
        self._size = 0
        self._total_steps = 0
        # Incremental saving: the directory whose files match this buffer's chunks, the chunks
        # written since, and each saved chunk's member CRCs (also recorded in meta.json).
        self._synced_dir: Path | None = None
        self._dirty_chunks: set[int] = set()
        self._chunk_crcs: dict[int, dict[str, int]] = {}
        self._latents: dict[str, np.ndarray] | None = None  # replay context, attach_latents

    # --- size ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Steps currently stored (at most ``capacity``)."""
        return self._size

    @property
    def total_steps(self) -> int:
        """Steps ever added, including those overwritten."""
        return self._total_steps

    @property
    def bytes_per_step(self) -> int:
        """Memory taken by one stored step across all arrays."""
        return sum(
            int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            for shape, dtype in self._layout.values()
        )

    @property
    def nbytes(self) -> int:
        """Memory allocated for the full capacity."""
        return self.bytes_per_step * self.capacity

    # --- writing and reading ----------------------------------------------------------------------
    def add(
        self,
        obs: dict[str, np.ndarray],
        action: np.ndarray,
        reward: float,
        is_first: bool,
        is_last: bool,
        is_terminal: bool,
        stream: int = 0,
    ) -> int:
        """Append one step (see the time convention in the module docstring).

        Args:
            obs: per key, ``(H, W, C)`` uint8 images or ``(V,)`` vectors, as in ``spec.obs_shapes``.
            action: ``(A,)`` the action that led to ``obs``; zeros when ``is_first``.
            reward: received on arriving at ``obs``; 0 when ``is_first``.
            is_first, is_last, is_terminal: episode flags (``is_terminal`` implies ``is_last``).
            stream: the env the step comes from (windows never mix streams).

        Returns:
            the physical index the step was written to (its stored latent is invalid until
            :meth:`write_latents`).
        """
        if set(obs) != set(self.spec.obs_shapes):
            expected = sorted(self.spec.obs_shapes)
            raise ValueError(f"replay.add: obs keys {sorted(obs)} != {expected}")
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (self.spec.action_dim,):
            expected = (self.spec.action_dim,)
            raise ValueError(f"replay.add: action shape {action.shape} != {expected}")
        if is_first and (reward != 0 or np.any(action)):
            raise ValueError("replay.add: action and reward must be zero at is_first steps")
        if is_terminal and not is_last:
            raise ValueError("replay.add: is_terminal requires is_last")
        index = self._cursor
        for key, value in obs.items():
            value = np.asarray(value)
            shape, dtype = self._layout[f"obs/{key}"]
            if value.shape != shape or (dtype == np.uint8 and value.dtype != np.uint8):
                raise ValueError(
                    f"replay.add: obs[{key!r}] is {value.dtype}{value.shape}, "
                    f"expected {dtype}{shape}"
                )
            self._data[f"obs/{key}"][index] = value
        self._data["action"][index] = action
        self._data["reward"][index] = reward
        self._data["is_first"][index] = is_first
        self._data["is_last"][index] = is_last
        self._data["is_terminal"][index] = is_terminal
        self._data["stream"][index] = stream
        if self._latents is not None:
            self._latents["valid"][index] = False
        self._dirty_chunks.add(index // self.chunk_size)
        self._cursor = (index + 1) % self.capacity
        self._size = min(self._size + 1, self.capacity)
        self._total_steps += 1
        return index

    def _oldest(self) -> int:
        """Physical index of the oldest stored step."""
        return self._cursor if self._size == self.capacity else 0

    def sample(
        self, batch_size: int, length: int, rng: np.random.Generator, pin_memory: bool = False
    ) -> Batch:
        """Uniformly sample ``batch_size`` windows of ``length`` contiguous steps.

        Args:
            batch_size: ``B``.
            length: ``T``; at most ``len(self)``.
            rng: the generator that picks window starts.
            pin_memory: return page-locked tensors, which copy to a GPU asynchronously.

        Returns:
            A :class:`Batch` of CPU tensors, ``is_first[:, 0]`` forced to True.
        """
        return self.gather(self.sample_index(batch_size, length, rng), pin_memory)

    def sample_index(self, batch_size: int, length: int, rng: np.random.Generator) -> np.ndarray:
        """Physical indices ``(B, T)`` of uniformly drawn windows (see :meth:`sample`)."""
        if batch_size < 1 or length < 1:
            raise ValueError(
                f"replay.sample: batch_size and length must be positive, got "
                f"{batch_size} and {length}"
            )
        if self._size < length:
            raise ValueError(
                f"replay.sample: need at least {length} stored steps for windows of length "
                f"{length}, have {self._size}"
            )
        # Uniform over the windows inside one stream, by rejection: a drawn window that spans a
        # change of stream is drawn again (none with one env; about T / run length with several).
        # Where runs are still shorter than T (right after a short warm-up with several envs) a
        # window keeps its last draw and :meth:`gather` splits it at the seam like two episodes.
        index = np.empty((batch_size, length), np.int64)
        todo = np.arange(batch_size)
        for _ in range(_REDRAWS):
            starts = rng.integers(0, self._size - length + 1, size=len(todo))  # logical
            logical = starts[:, None] + np.arange(length)[None, :]  # (n, T)
            index[todo] = (self._oldest() + logical) % self.capacity  # physical
            stream = self._data["stream"][index[todo]]
            todo = todo[(stream != stream[:, :1]).any(1)]
            if not len(todo):
                break
        return index  # (B, T)

    def gather(self, index: np.ndarray, pin_memory: bool = False) -> Batch:
        """The steps at physical ``index (B, T)`` as a :class:`Batch`, ``is_first[:, 0]`` True.

        A window that crosses from one env's stream into another's (only when no window fits
        inside one stream) reads as two episodes: ``is_last`` before the seam, ``is_first`` after.
        """
        is_first = self._data["is_first"][index]  # (B, T), a copy
        is_first[:, 0] = True
        is_last = self._data["is_last"][index]
        stream = self._data["stream"][index]
        seam = stream[:, 1:] != stream[:, :-1]  # (B, T − 1)
        is_first[:, 1:] |= seam
        is_last[:, :-1] |= seam

        def tensor(array: np.ndarray) -> torch.Tensor:
            t = torch.from_numpy(array)
            return t.pin_memory() if pin_memory else t

        return Batch(
            obs={key: tensor(self._data[f"obs/{key}"][index]) for key in self.spec.obs_shapes},
            action=tensor(self._data["action"][index]),
            reward=tensor(self._data["reward"][index]),
            is_first=tensor(is_first),
            is_last=tensor(is_last),
            is_terminal=tensor(self._data["is_terminal"][index]),
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """Copies of the stored steps in insertion order, oldest first.

        Returns:
            ``{"obs/<key>": (N, ...), "action": (N, A), "reward": (N,), "is_first": (N,),
            "is_last": (N,), "is_terminal": (N,)}`` with ``N = len(self)``.
        """
        order = (self._oldest() + np.arange(self._size)) % self.capacity
        return {name: array[order] for name, array in self._data.items()}

    def extend(self, arrays: dict[str, np.ndarray]) -> None:
        """Append many steps at once, e.g. ``other.arrays()`` of a smaller (warm-up) buffer."""
        n = len(arrays["reward"])
        if set(arrays) != set(self._data):
            raise ValueError(f"replay.extend: keys {sorted(arrays)} != {sorted(self._data)}")
        for offset in range(0, n, self.capacity):  # more steps than capacity: keep the newest
            part = slice(offset, min(offset + self.capacity, n))
            count = part.stop - part.start
            index = (self._cursor + np.arange(count)) % self.capacity
            for name, array in self._data.items():
                array[index] = arrays[name][part]
            if self._latents is not None:
                self._latents["valid"][index] = False
            self._dirty_chunks.update((index // self.chunk_size).tolist())
            self._cursor = int((self._cursor + count) % self.capacity)
            self._size = min(self._size + count, self.capacity)
            self._total_steps += count

    # --- replay context: the latent state last computed for each stored step ----------------------
    def attach_latents(self, deter: int, stoch: int, classes: int) -> None:
        """Keep an RSSM state per stored step: ``deter (D,)`` as float16 (the GRU state is bounded;
        the official code keeps it in bfloat16) and ``stoch (S,)`` as class indices of the one-hot
        latents. Memory: ``2·D + 2·S + 1`` bytes per step, mapped lazily like the steps."""
        shapes = {
            "deter": ((deter,), np.float16),
            "stoch": ((stoch,), np.int16),
            "valid": ((), np.bool_),
        }
        if classes > np.iinfo(np.int16).max:
            raise ValueError(f"replay: {classes} latent classes do not fit int16 indices")
        if self._latents is not None:
            if all(self._latents[k].shape[1:] == shape for k, (shape, _) in shapes.items()):
                return
            raise ValueError("replay: latents already attached with other sizes")
        self._latents = {
            k: np.zeros((self.capacity, *shape), dtype) for k, (shape, dtype) in shapes.items()
        }

    @property
    def has_latents(self) -> bool:
        return self._latents is not None

    def read_latents(self, index: np.ndarray) -> Latents:
        """The stored latents at physical ``index (B,)``; ``valid`` False where there are none."""
        assert self._latents is not None, "attach_latents first"
        return Latents(*(self._latents[k][index] for k in Latents._fields))

    def write_latents(self, index: np.ndarray, latents: Latents) -> None:
        """Store ``latents`` (arrays ``(B, T, ...)``) for the steps at ``index (B, T)``."""
        assert self._latents is not None, "attach_latents first"
        self._latents["deter"][index] = latents.deter
        self._latents["stoch"][index] = latents.stoch
        self._latents["valid"][index] = latents.valid

    def latents_state(self) -> dict[str, torch.Tensor]:
        """The stored latents in insertion order (for a checkpoint; empty when none attached)."""
        if self._latents is None:
            return {}
        order = (self._oldest() + np.arange(self._size)) % self.capacity
        return {k: torch.from_numpy(v[order]) for k, v in self._latents.items()}

    def load_latents_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`latents_state` into a buffer holding the same steps."""
        if self._latents is None or not state:
            return
        if len(state["valid"]) != self._size:
            raise ReplayError(
                f"replay: checkpoint holds latents for {len(state['valid'])} steps, "
                f"the replay {self._size}"
            )
        order = (self._oldest() + np.arange(self._size)) % self.capacity
        for k, v in state.items():
            self._latents[k][order] = v.numpy()

    # --- persistence ----------------------------------------------------------------------------
    def _chunk_rows(self, chunk: int) -> int:
        """How many stored steps physical chunk ``chunk`` holds (0 if none)."""
        start = chunk * self.chunk_size
        end = min(start + self.chunk_size, self.capacity)
        filled_end = self.capacity if self._size == self.capacity else self._size
        return max(0, min(end, filled_end) - start)

    def _used_chunks(self) -> list[int]:
        """Indices of the chunks that hold at least one stored step."""
        n_chunks = -(-self.capacity // self.chunk_size)
        return [chunk for chunk in range(n_chunks) if self._chunk_rows(chunk) > 0]

    def save(self, directory: str | Path) -> None:
        """Write the buffer to ``directory`` as chunk files plus ``meta.json``.

        Only chunks changed since the last save (or load) are written: an unchanged chunk is kept
        where ``directory`` is the folder of the last save, and hard-linked from that folder
        (copied where links fail) where it is a new one (the next checkpoint), so every
        checkpoint folder is whole on its own at the cost of the new chunks only. Chunks are
        written to temporary names, synced and renamed, and ``meta.json`` comes last; it records
        every chunk's CRCs, so :meth:`load` of a folder whose save was cut short either returns
        the previous consistent state or raises :class:`ReplayError` naming a chunk that no
        longer matches. (Checkpoints never rewrite a folder in place: ``checkpoint.CheckpointDir``.)
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        source = self._synced_dir
        used = self._used_chunks()
        for chunk in used:
            path = directory / CHUNK_PATTERN.format(chunk)
            if source is not None and chunk not in self._dirty_chunks:
                kept = source / path.name
                if kept.is_file():
                    if kept.resolve() != path.resolve():
                        link_or_copy(kept, path)
                    continue
            start = chunk * self.chunk_size
            rows = self._chunk_rows(chunk)
            arrays = {name: array[start : start + rows] for name, array in self._data.items()}
            self._chunk_crcs[chunk] = write_chunk(path, arrays)
        write_index(
            directory,
            self.spec,
            ring=(self.capacity, self.chunk_size, self._size, self._cursor, self._total_steps),
            chunks={c: (self._chunk_rows(c), self._chunk_crcs[c]) for c in used},
        )
        self._synced_dir = directory.resolve()
        self._dirty_chunks = set()

    def moved_to(self, directory: str | Path) -> None:
        """The folder of the last save was renamed to ``directory``: later saves link from it."""
        self._synced_dir = Path(directory).resolve()

    @classmethod
    def load(cls, directory: str | Path, spec: EnvSpec | None = None) -> ReplayBuffer:
        """Read a buffer written by :meth:`save`.

        Args:
            directory: the directory holding ``meta.json`` and the chunks.
            spec: if given, the stored spec must equal it.

        Raises:
            ReplayError: a missing or corrupt file, a shape/dtype mismatch or a spec mismatch;
                the message names the file.
        """
        directory = Path(directory)
        meta = read_index(directory, spec)
        buffer = cls(EnvSpec.from_dict(meta["spec"]), meta["capacity"], meta["chunk_size"])
        buffer._size, buffer._cursor = meta["size"], meta["cursor"]
        buffer._total_steps = meta["total_steps"]
        used = buffer._used_chunks()
        crcs = chunk_entries(directory, meta, {c: buffer._chunk_rows(c) for c in used})
        for chunk in used:
            start, rows = chunk * buffer.chunk_size, buffer._chunk_rows(chunk)
            path = directory / CHUNK_PATTERN.format(chunk)
            arrays = read_chunk(path, buffer._layout, rows, crcs[chunk])
            for key, array in arrays.items():
                buffer._data[key][start : start + rows] = array
            buffer._chunk_crcs[chunk] = crcs[chunk]
        buffer._synced_dir = directory.resolve()
        return buffer
