"""Exact tests of the replay buffer: windows, the ring seam, time alignment and persistence."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import dreamer.replay as replay_module
import dreamer.replay_files as replay_files
from dreamer.envs import EnvSpec
from dreamer.replay import Batch, ReplayBuffer, ReplayError

EPISODE_LENGTH = 7


@pytest.fixture
def spec() -> EnvSpec:
    return EnvSpec(
        obs_shapes={"counter": (1,), "image": (4, 4, 1)},
        image_keys=("image",),
        vector_keys=("counter",),
        action_dim=2,
        discrete=False,
        action_low=(-1.0, -1.0),
        action_high=(1.0, 1.0),
        env_id="tests/Fake-v0",
    )


def _fill(buffer: ReplayBuffer, start: int, count: int) -> None:
    """Add steps ``start .. start + count - 1``; step g is ``g % EPISODE_LENGTH`` into an episode.

    The counter observation and the image hold g, action[0] and reward hold g (zero at episode
    starts), and even episodes terminate while odd ones are truncated.
    """
    for g in range(start, start + count):
        position = g % EPISODE_LENGTH
        first, last = position == 0, position == EPISODE_LENGTH - 1
        terminal = last and (g // EPISODE_LENGTH) % 2 == 0
        obs = {"counter": np.array([g], np.float32), "image": np.full((4, 4, 1), g % 256, np.uint8)}
        action = np.zeros(2) if first else np.array([g, 0.5])
        buffer.add(obs, action, 0.0 if first else float(g), first, last, terminal)


def _counters(batch: Batch) -> np.ndarray:
    return batch.obs["counter"][..., 0].numpy().astype(np.int64)  # (B, T)


def test_sample_shapes_and_contiguous_windows(spec):
    buffer = ReplayBuffer(spec, capacity=100)
    _fill(buffer, 0, 60)
    assert len(buffer) == 60 and buffer.total_steps == 60
    batch = buffer.sample(32, 10, np.random.default_rng(0))
    assert batch.obs["image"].shape == (32, 10, 4, 4, 1) and batch.obs["image"].dtype == torch.uint8
    assert batch.obs["counter"].shape == (32, 10, 1) and batch.obs["counter"].dtype == torch.float32
    assert batch.action.shape == (32, 10, 2) and batch.action.dtype == torch.float32
    for flags in (batch.reward, batch.is_first, batch.is_last, batch.is_terminal):
        assert flags.shape == (32, 10)
    assert batch.is_first.dtype == torch.bool and batch.reward.dtype == torch.float32
    counters = _counters(batch)
    assert np.all(np.diff(counters, axis=1) == 1)
    np.testing.assert_array_equal(batch.obs["image"][:, :, 0, 0, 0].numpy(), counters)


def test_windows_never_cross_the_ring_seam(spec):
    buffer = ReplayBuffer(spec, capacity=50)
    _fill(buffer, 0, 137)  # keeps steps 87 .. 136; the seam lies between 136 and 87
    assert len(buffer) == 50 and buffer.total_steps == 137
    counters = _counters(buffer.sample(2000, 10, np.random.default_rng(1)))
    assert np.all(np.diff(counters, axis=1) == 1)
    assert counters.min() == 87 and counters.max() == 136
    starts = set(counters[:, 0].tolist())
    assert starts == set(range(87, 128))  # all 41 valid windows are drawn


def test_arrays_are_in_insertion_order(spec):
    buffer = ReplayBuffer(spec, capacity=50)
    _fill(buffer, 0, 137)
    arrays = buffer.arrays()
    assert set(arrays) == {
        "obs/counter",
        "obs/image",
        "action",
        "reward",
        "is_first",
        "is_last",
        "is_terminal",
        "stream",
    }
    np.testing.assert_array_equal(arrays["obs/counter"][:, 0], np.arange(87, 137))
    assert arrays["obs/image"].shape == (50, 4, 4, 1)


def test_is_first_forced_at_window_start_and_kept_inside(spec):
    buffer = ReplayBuffer(spec, capacity=100)
    _fill(buffer, 0, 80)
    batch = buffer.sample(300, 12, np.random.default_rng(2))
    counters = _counters(batch)
    is_first = batch.is_first.numpy()
    assert np.all(is_first[:, 0])
    np.testing.assert_array_equal(is_first[:, 1:], counters[:, 1:] % EPISODE_LENGTH == 0)
    assert is_first[:, 1:].any()  # windows do cross episode boundaries
    # The buffer itself is unchanged: forcing happens on the sampled copy.
    assert buffer.arrays()["is_first"].sum() == len(range(0, 80, EPISODE_LENGTH))


def test_actions_rewards_and_flags_follow_the_time_convention(spec):
    buffer = ReplayBuffer(spec, capacity=100)
    _fill(buffer, 0, 80)
    batch = buffer.sample(300, 12, np.random.default_rng(3))
    counters = _counters(batch)
    episode_start = counters % EPISODE_LENGTH == 0
    # action[t] led to obs[t] and reward[t] was received on arriving there: both carry t's counter.
    expected = np.where(episode_start, 0, counters)
    np.testing.assert_array_equal(batch.action[..., 0].numpy(), expected)
    np.testing.assert_array_equal(batch.reward.numpy(), expected)
    last = counters % EPISODE_LENGTH == EPISODE_LENGTH - 1
    np.testing.assert_array_equal(batch.is_last.numpy(), last)
    terminal = last & ((counters // EPISODE_LENGTH) % 2 == 0)
    np.testing.assert_array_equal(batch.is_terminal.numpy(), terminal)


def test_sampling_is_deterministic_given_the_generator(spec):
    buffer = ReplayBuffer(spec, capacity=100)
    _fill(buffer, 0, 60)
    first = buffer.sample(8, 5, np.random.default_rng(9))
    second = buffer.sample(8, 5, np.random.default_rng(9))
    assert torch.equal(first.action, second.action)


def test_too_few_steps_raise(spec):
    buffer = ReplayBuffer(spec, capacity=100)
    _fill(buffer, 0, 5)
    buffer.sample(2, 5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="need at least 6 stored steps.*have 5"):
        buffer.sample(2, 6, np.random.default_rng(0))


def test_add_validates_its_inputs(spec):
    buffer = ReplayBuffer(spec, capacity=10)
    obs = {"counter": np.zeros(1, np.float32), "image": np.zeros((4, 4, 1), np.uint8)}
    with pytest.raises(ValueError, match="obs keys"):
        buffer.add({"counter": obs["counter"]}, np.zeros(2), 0.0, True, False, False)
    with pytest.raises(ValueError, match="zero at is_first"):
        buffer.add(obs, np.ones(2), 0.0, True, False, False)
    with pytest.raises(ValueError, match="is_terminal requires is_last"):
        buffer.add(obs, np.zeros(2), 0.0, False, False, True)
    with pytest.raises(ValueError, match="obs\\['image'\\]"):
        buffer.add(
            {**obs, "image": np.zeros((4, 4, 1), np.float32)}, np.zeros(2), 0.0, True, False, False
        )
    assert len(buffer) == 0


def test_batch_to_device_and_memory_size(spec):
    buffer = ReplayBuffer(spec, capacity=10)
    _fill(buffer, 0, 10)
    batch = buffer.sample(2, 3, np.random.default_rng(0))
    moved = batch.to("cpu")
    assert isinstance(moved, Batch) and torch.equal(moved.obs["image"], batch.obs["image"])
    # counter 4 + image 16 + action 8 + reward 4 + three flags 3 + stream 2
    assert buffer.bytes_per_step == 37 and buffer.nbytes == 370


# --- persistence ----------------------------------------------------------------------------------
def _assert_same(first: ReplayBuffer, second: ReplayBuffer) -> None:
    assert len(first) == len(second) and first.total_steps == second.total_steps
    assert first.spec == second.spec and first.capacity == second.capacity
    first_arrays, second_arrays = first.arrays(), second.arrays()
    for name, array in first_arrays.items():
        np.testing.assert_array_equal(array, second_arrays[name], err_msg=name)
        assert array.dtype == second_arrays[name].dtype


@pytest.mark.parametrize("steps", [23, 137], ids=["partial", "wrapped"])
def test_save_load_round_trip(spec, tmp_path, steps):
    buffer = ReplayBuffer(spec, capacity=50, chunk_size=16)
    _fill(buffer, 0, steps)
    buffer.save(tmp_path / "replay")
    loaded = ReplayBuffer.load(tmp_path / "replay", spec)
    _assert_same(buffer, loaded)
    assert loaded.chunk_size == 16
    # The write position is restored: both continue identically.
    _fill(buffer, steps, 30)
    _fill(loaded, steps, 30)
    _assert_same(buffer, loaded)
    first = buffer.sample(16, 8, np.random.default_rng(4))
    second = loaded.sample(16, 8, np.random.default_rng(4))
    assert torch.equal(first.obs["counter"], second.obs["counter"])


def test_save_writes_chunks_and_meta(spec, tmp_path):
    buffer = ReplayBuffer(spec, capacity=50, chunk_size=16)
    _fill(buffer, 0, 20)
    buffer.save(tmp_path)
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == ["chunk_000000.npz", "chunk_000001.npz", "meta.json"]
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["format_version"] == 2 and meta["total_steps"] == 20 and meta["cursor"] == 20
    assert meta["capacity"] == 50 and meta["chunk_size"] == 16 and meta["size"] == 20
    assert EnvSpec.from_dict(meta["spec"]) == spec
    with np.load(tmp_path / "chunk_000001.npz") as chunk:  # readable by plain numpy
        np.testing.assert_array_equal(chunk["obs/counter"][:, 0], np.arange(16, 20))


def test_save_is_byte_reproducible(spec, tmp_path):
    for name in ("a", "b"):
        buffer = ReplayBuffer(spec, capacity=50, chunk_size=16)
        _fill(buffer, 0, 40)
        buffer.save(tmp_path / name)
    for path in (tmp_path / "a").iterdir():
        assert path.read_bytes() == (tmp_path / "b" / path.name).read_bytes(), path.name


def test_incremental_save_rewrites_only_changed_chunks(spec, tmp_path, monkeypatch):
    written = []
    original = replay_module.write_chunk

    def spy(path, arrays):
        written.append(path.name)
        return original(path, arrays)

    monkeypatch.setattr(replay_module, "write_chunk", spy)
    buffer = ReplayBuffer(spec, capacity=50, chunk_size=10)
    _fill(buffer, 0, 35)
    buffer.save(tmp_path)
    assert written == [f"chunk_00000{i}.npz" for i in range(4)]

    written.clear()
    _fill(buffer, 35, 3)  # physical 35..37: chunk 3
    buffer.save(tmp_path)
    assert written == ["chunk_000003.npz"]

    written.clear()
    _fill(buffer, 38, 20)  # physical 38..49 then wraps to 0..7: chunks 3, 4, 0
    buffer.save(tmp_path)
    assert sorted(written) == ["chunk_000000.npz", "chunk_000003.npz", "chunk_000004.npz"]

    written.clear()
    buffer.save(tmp_path)
    assert written == []

    loaded = ReplayBuffer.load(tmp_path, spec)  # loading syncs with the directory too
    loaded.save(tmp_path)
    assert written == []
    _fill(loaded, 58, 1)  # physical 8: chunk 0
    loaded.save(tmp_path)
    assert written == ["chunk_000000.npz"]

    written.clear()
    loaded.save(tmp_path / "next")  # a new folder (the next checkpoint): unchanged chunks linked
    assert written == []
    for chunk in sorted((tmp_path / "next").glob("chunk_*.npz")):
        assert chunk.samefile(tmp_path / chunk.name)  # the same file, not a copy
    _fill(loaded, 59, 1)  # physical 9: chunk 0, written; the others linked from "next"
    loaded.save(tmp_path / "after")
    assert written == ["chunk_000000.npz"]
    assert not (tmp_path / "after/chunk_000000.npz").samefile(tmp_path / "next/chunk_000000.npz")
    assert (tmp_path / "after/chunk_000001.npz").samefile(tmp_path / "next/chunk_000001.npz")
    _assert_same(loaded, ReplayBuffer.load(tmp_path / "after", spec))
    _assert_same(ReplayBuffer.load(tmp_path, spec), ReplayBuffer.load(tmp_path / "next", spec))


def test_interrupted_save_is_detected(spec, tmp_path, monkeypatch):
    buffer = ReplayBuffer(spec, capacity=50, chunk_size=10)
    _fill(buffer, 0, 25)
    buffer.save(tmp_path)
    _fill(buffer, 25, 30)  # wraps into chunk 0

    original = replay_files.write_bytes

    def crash_on_meta(path, data, sync=False):
        if path.name == "meta.json":
            raise KeyboardInterrupt
        original(path, data, sync)

    monkeypatch.setattr(replay_files, "write_bytes", crash_on_meta)
    with pytest.raises(KeyboardInterrupt):
        buffer.save(tmp_path)
    with pytest.raises(ReplayError, match="does not match meta.json"):
        ReplayBuffer.load(tmp_path, spec)


def _one_line_error(directory, spec=None) -> str:
    with pytest.raises(ReplayError) as error:
        ReplayBuffer.load(directory, spec)
    message = str(error.value)
    assert "\n" not in message and isinstance(error.value, ValueError)
    return message


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip"])
def test_corrupt_chunk_names_the_file(spec, tmp_path, damage):
    buffer = ReplayBuffer(spec, capacity=50, chunk_size=16)
    _fill(buffer, 0, 40)
    buffer.save(tmp_path)
    path = tmp_path / "chunk_000001.npz"
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "garbage":
        data = bytearray(b"not a zip file")
    else:  # damage compressed bytes inside the first member
        for offset in range(60, 80):
            data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    message = _one_line_error(tmp_path, spec)
    assert message.startswith(f"{path}: ")


def test_missing_directory_or_meta(spec, tmp_path):
    message = _one_line_error(tmp_path / "nowhere")
    assert message.startswith(f"{tmp_path / 'nowhere' / 'meta.json'}: missing replay metadata")
    buffer = ReplayBuffer(spec, capacity=50, chunk_size=16)
    _fill(buffer, 0, 20)
    buffer.save(tmp_path)
    (tmp_path / "chunk_000000.npz").unlink()
    assert _one_line_error(tmp_path).startswith(f"{tmp_path / 'chunk_000000.npz'}: missing")
    (tmp_path / "meta.json").write_text("{not json")
    assert _one_line_error(tmp_path).startswith(f"{tmp_path / 'meta.json'}: corrupt")


def test_spec_mismatch(spec, tmp_path):
    buffer = ReplayBuffer(spec, capacity=50)
    _fill(buffer, 0, 20)
    buffer.save(tmp_path)
    other = dataclasses.replace(spec, action_dim=3)
    message = _one_line_error(tmp_path, other)
    assert message.startswith(f"{tmp_path / 'meta.json'}: replay was recorded for another")
    assert "action_dim: stored 2, expected 3" in message


def test_chunk_with_wrong_shape(spec, tmp_path):
    buffer = ReplayBuffer(spec, capacity=50, chunk_size=16)
    _fill(buffer, 0, 20)
    buffer.save(tmp_path)
    path = tmp_path / "chunk_000001.npz"
    arrays = {name: array[16:20] for name, array in buffer.arrays().items()}
    arrays["obs/image"] = np.zeros((4, 4, 4, 2), np.uint8)
    crcs = replay_module.write_chunk(path, arrays)  # consistent CRCs, wrong content
    meta = json.loads((tmp_path / "meta.json").read_text())
    meta["chunks"]["chunk_000001.npz"]["crc"] = crcs
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    message = _one_line_error(tmp_path, spec)
    assert message == f"{path}: obs/image is uint8(4, 4, 4, 2), expected uint8(4, 4, 4, 1)"


# --- replay context: stored latents ---------------------------------------------------------------
def _latents(index: np.ndarray, deter: int = 3, stoch: int = 2):
    """Latents whose values name the physical step they were written for."""
    value = index.astype(np.float16)[..., None]
    return replay_module.Latents(
        np.broadcast_to(value, (*index.shape, deter)).copy(),
        np.broadcast_to(index[..., None] % 4, (*index.shape, stoch)).astype(np.int16),
        np.ones(index.shape, bool),
    )


def test_latents_round_trip_and_are_dropped_when_their_step_is_overwritten(spec):
    buffer = ReplayBuffer(spec, capacity=10)
    buffer.attach_latents(3, 2, 4)
    _fill(buffer, 0, 10)
    index = buffer.sample_index(2, 4, np.random.default_rng(0))
    assert not buffer.read_latents(index[:, 0]).valid.any()  # nothing trained yet
    buffer.write_latents(index, _latents(index))
    read = buffer.read_latents(index[:, 1])
    assert read.valid.all() and np.array_equal(read.deter[:, 0], index[:, 1].astype(np.float16))
    assert np.array_equal(read.stoch[:, 0], index[:, 1] % 4)
    written = np.unique(index)
    _fill(buffer, 10, 3)  # overwrites physical steps 0, 1, 2
    valid = buffer.read_latents(np.arange(10)).valid
    assert np.flatnonzero(valid).tolist() == sorted(set(written.tolist()) - {0, 1, 2})


def test_latents_state_restores_into_a_buffer_with_another_layout(spec):
    """A checkpoint keeps the latents in insertion order: a resumed run's fresh buffer (other
    capacity, other physical positions) gets each latent back at its own step."""
    ring = ReplayBuffer(spec, capacity=8)
    ring.attach_latents(3, 2, 4)
    _fill(ring, 0, 12)  # wrapped: physical order differs from insertion order
    ring.write_latents(np.arange(8)[None], _latents(np.arange(8)[None]))
    state = ring.latents_state()
    fresh = ReplayBuffer(spec, capacity=20)
    fresh.attach_latents(3, 2, 4)
    fresh.extend(ring.arrays())
    fresh.load_latents_state(state)
    # step g lives at physical g % 8 in the ring and at g − 4 in the fresh buffer
    steps = np.arange(4, 12)
    read = fresh.read_latents(steps - 4)
    assert read.valid.all() and np.array_equal(read.deter[:, 0], (steps % 8).astype(np.float16))
    empty = ReplayBuffer(spec, capacity=20)
    empty.attach_latents(3, 2, 4)
    with pytest.raises(ReplayError, match="latents for 8 steps, the replay 0"):
        empty.load_latents_state(state)


def test_from_step_drops_the_context_step(spec):
    buffer = ReplayBuffer(spec, capacity=100)
    _fill(buffer, 0, 30)
    batch = buffer.sample(4, 6, np.random.default_rng(5))
    window = batch.from_step(1)
    assert window.reward.shape == (4, 5)
    assert np.array_equal(_counters(window), _counters(batch)[:, 1:])
    assert torch.equal(window.is_first, batch.is_first[:, 1:])  # stored flags, nothing forced


def test_windows_stay_in_one_stream_and_a_forced_crossing_reads_as_two_episodes(spec):
    buffer = ReplayBuffer(spec, capacity=100)
    obs = {"counter": np.zeros(1, np.float32), "image": np.zeros((4, 4, 1), np.uint8)}
    for stream, count in ((0, 8), (1, 8), (0, 3)):  # runs of two envs, mid-episode
        for _ in range(count):
            buffer.add(
                {**obs, "counter": np.array([stream], np.float32)},
                np.ones(2),
                1.0,
                False,
                False,
                False,
                stream=stream,
            )
    inside = buffer.sample(64, 5, np.random.default_rng(0))  # fits inside the runs of 8
    assert torch.all(inside.obs["counter"] == inside.obs["counter"][:, :1])
    assert not inside.is_first[:, 1:].any() and not inside.is_last.any()
    crossing = buffer.sample(64, 12, np.random.default_rng(0))  # longer than any run
    seam = crossing.obs["counter"][:, 1:, 0] != crossing.obs["counter"][:, :-1, 0]
    assert seam.any()
    assert torch.equal(crossing.is_first[:, 1:], seam) and torch.equal(
        crossing.is_last[:, :-1], seam
    )
