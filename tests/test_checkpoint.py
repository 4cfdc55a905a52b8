"""Checkpoints (dreamer/checkpoint.py): the folder of whole training checkpoints and the agent
file. The kill-anywhere behaviour through the train stage is in test_stages.py and
test_fault_injection.py; here the folder's own rules, one at a time."""

import os

import numpy as np
import pytest
import torch

from dreamer.agent import Agent
from dreamer.checkpoint import CheckpointDir, load_agent, number_of, save_agent
from dreamer.errors import CheckpointError
from dreamer.replay import ReplayBuffer

from .conftest import make_spec, tiny


def _replay(steps: int, chunk_size: int = 8) -> ReplayBuffer:
    replay = ReplayBuffer(make_spec(vector=3), capacity=64, chunk_size=chunk_size)
    _add(replay, 0, steps)
    return replay


def _add(replay: ReplayBuffer, start: int, count: int) -> None:
    for g in range(start, start + count):
        obs = {"vector": np.full(3, g, np.float32)}
        replay.add(obs, np.zeros(2), float(g), g == 0, False, False)


def test_saves_are_whole_numbered_folders_and_only_the_newest_two_stay(tmp_path):
    folder, replay = CheckpointDir(tmp_path / "ckpt"), _replay(10)
    saved = []
    for step in range(3):
        _add(replay, 10 + step, 1)
        saved.append(folder.save({"step": step}, replay))
    assert [number_of(p) for p in saved] == [1, 2, 3]
    assert folder.entries() == [saved[2], saved[1]]  # newest first; the first pruned
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["ckpt-000002", "ckpt-000003"]
    assert folder.load_state(saved[2])["step"] == 2
    loaded = folder.load_replay(saved[2], replay.spec)
    assert loaded.total_steps == 13
    np.testing.assert_array_equal(loaded.arrays()["reward"], replay.arrays()["reward"])


def test_unchanged_replay_chunks_are_hard_links_to_the_previous_checkpoint(tmp_path):
    folder, replay = CheckpointDir(tmp_path), _replay(20)  # chunks 0, 1 full; chunk 2 partial
    first = folder.save({}, replay)
    _add(replay, 20, 1)  # only chunk 2 changes
    second = folder.save({}, replay)
    for name, shared in (("chunk_000000.npz", True), ("chunk_000002.npz", False)):
        a, b = first / "replay" / name, second / "replay" / name
        assert a.samefile(b) is shared, name
    assert os.stat(second / "replay" / "chunk_000000.npz").st_nlink == 2


def test_a_damaged_newest_names_its_file_and_the_one_before(tmp_path):
    folder, replay = CheckpointDir(tmp_path), _replay(5)
    older = folder.save({"n": 1}, replay)
    newest = folder.save({"n": 2}, replay)
    (newest / "state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError) as error:
        folder.load_state(newest)
    message = str(error.value)
    assert "\n" not in message and str(newest / "state.pt") in message
    assert message.endswith(f"remove {newest} to resume from {older.name}")
    assert folder.load_state(older)["n"] == 1


def test_a_killed_writers_temporary_folder_is_never_an_entry_and_is_cleared(tmp_path):
    folder, replay = CheckpointDir(tmp_path), _replay(5)
    dead = tmp_path / ".ckpt-000001.999999999.tmp"  # a pid that is not alive
    (dead / "replay").mkdir(parents=True)
    assert folder.entries() == [] and folder.latest() is None
    saved = folder.save({}, replay)
    assert not dead.exists() and folder.entries() == [saved]


def test_adopt_links_a_checkpoint_of_another_folder_in_under_its_number(tmp_path):
    mirror, out, replay = (
        CheckpointDir(tmp_path / "mirror"),
        CheckpointDir(tmp_path / "out"),
        _replay(9),
    )
    entry = mirror.save({"n": 7}, replay, number=7)
    adopted = out.adopt(entry)
    assert adopted.name == "ckpt-000007" and out.next_number() == 8
    assert (adopted / "state.pt").samefile(entry / "state.pt")
    assert out.load_state(adopted)["n"] == 7


def test_the_agent_file_rebuilds_the_agent_and_refuses_another_env(tmp_path):
    cfg = tiny()
    agent = Agent(make_spec(vector=3), cfg)
    agent.gradient_steps = 12
    save_agent(tmp_path / "agent.pt", agent, extra={"env_steps": 345})
    loaded, extra = load_agent(tmp_path / "agent.pt")
    assert extra == {"env_steps": 345} and loaded.gradient_steps == 12
    for name, value in agent.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value, msg=name)
    with pytest.raises(CheckpointError, match="trained on synthetic, params say Pendulum-v1"):
        load_agent(tmp_path / "agent.pt", env_id="Pendulum-v1")
    (tmp_path / "state.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="corrupt or unreadable checkpoint"):
        load_agent(tmp_path / "state.pt")
