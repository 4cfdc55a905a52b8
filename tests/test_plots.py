"""pipeline.plots: each plot writes a real PNG of sensible size, atomically, without warnings."""

import json
import struct
import warnings

import numpy as np
import pandas as pd
import pytest

from pipeline import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _check_png(path, min_width=400, min_height=200):
    assert path.is_file()
    assert path.stat().st_size > 10_000
    width, height = _png_size(path)
    assert min_width <= width <= 4000 and min_height <= height <= 4000
    assert not [p for p in path.parent.iterdir() if ".tmp" in p.name]


@pytest.fixture(autouse=True)
def warnings_are_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def _returns_csv(path, returns, lengths):
    pd.DataFrame(
        {
            "episode": np.arange(len(returns)),
            "seed": 0,
            "return": returns,
            "length": lengths,
            "env_step": np.cumsum(lengths),
        }
    ).to_csv(path, index=False)
    return path


def test_plot_returns_pendulum_with_evaluation(tmp_path):
    rng = np.random.default_rng(0)
    n = 60
    returns = -1400 + 1200 * (1 - np.exp(-np.arange(n) / 20)) + rng.normal(0, 100, n)
    csv = _returns_csv(tmp_path / "returns.csv", returns, np.full(n, 200))
    eval_json = tmp_path / "eval.json"
    eval_json.write_text(
        json.dumps(
            {
                "eval/return_mean": -180.0,
                "eval/return_std": 40.0,
                "eval/env_steps": 12000,
                "eval/episodes": 10,
                "eval/random_return_mean": -1250.0,
            }
        )
    )
    out = plots.plot_returns(
        csv, eval_json, tmp_path / "plots" / "returns.png", title="Pendulum-v1"
    )
    assert out == tmp_path / "plots" / "returns.png"
    _check_png(out)


def test_plot_returns_cartpole_with_an_eval_dict_or_none(tmp_path):
    lengths = np.clip(np.linspace(10, 500, 40).astype(int), 1, 500)
    csv = _returns_csv(tmp_path / "returns.csv", lengths.astype(float), lengths)
    evaluation = {"eval/return_mean": 500.0, "eval/return_std": 0.0, "eval/env_steps": 10000}
    _check_png(plots.plot_returns(csv, evaluation, tmp_path / "a.png", title="CartPole-v1"))
    _check_png(plots.plot_returns(csv, None, tmp_path / "b.png"))


def test_plot_returns_without_episodes_still_writes_a_png(tmp_path):
    csv = _returns_csv(tmp_path / "returns.csv", np.array([]), np.array([], dtype=int))
    out = plots.plot_returns(csv, None, tmp_path / "empty.png")
    assert out.is_file() and _png_size(out)[0] >= 400


def test_plot_returns_names_a_missing_column(tmp_path):
    csv = tmp_path / "bad.csv"
    pd.DataFrame({"env_step": [1], "reward": [2.0]}).to_csv(csv, index=False)
    with pytest.raises(ValueError, match="bad.csv: column 'return' is missing"):
        plots.plot_returns(csv, None, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def _losses_csv(path, n=200):
    rng = np.random.default_rng(1)
    steps = np.arange(n) * 10
    pd.DataFrame(
        {
            "gradient_step": steps,
            "env_step": 1000 + steps * 2,
            "wall_seconds": steps * 0.1,
            "updates_per_second": 15 + rng.normal(0, 1, n),
            "loss/reconstruction": 40 * np.exp(-steps / 500) + 0.05 + rng.gamma(2, 0.02, n),
            "loss/reward": 2 * np.exp(-steps / 300) + rng.gamma(2, 0.01, n),
            "loss/kl_dynamics": 1 + rng.gamma(2, 0.2, n),
            "loss/actor": rng.normal(0, 5, n),  # changes sign: symlog
            "actor/entropy": np.r_[np.nan, np.linspace(1, 0.5, n - 1)],
        }
    ).to_csv(path, index=False)
    return path


def test_plot_losses_grid(tmp_path):
    out = plots.plot_losses(_losses_csv(tmp_path / "losses.csv"), tmp_path / "losses.png", "X")
    _check_png(out, min_width=800, min_height=400)


def test_plot_losses_with_one_row_and_no_rows(tmp_path):
    csv = tmp_path / "one.csv"
    pd.DataFrame({"gradient_step": [0], "env_step": [0], "loss/reward": [1.0]}).to_csv(
        csv, index=False
    )
    assert plots.plot_losses(csv, tmp_path / "one.png").is_file()
    pd.DataFrame(columns=["gradient_step", "env_step", "loss/reward"]).to_csv(csv, index=False)
    assert plots.plot_losses(csv, tmp_path / "none.png").is_file()


@pytest.mark.parametrize(
    "values, scale",
    [
        ([1.0, 2.0, 3.0], "linear"),
        ([100.0, 10.0, 0.5, 0.01], "log"),
        ([-50.0, 3.0, 0.1, 20.0], "symlog"),
        ([-1.0, 0.5, 0.2], "linear"),
        ([np.nan, 0.0, 0.0], "linear"),
    ],
)
def test_y_scale(values, scale):
    assert plots._y_scale(np.array(values))[0] == scale


def test_plot_frames(tmp_path):
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, (20, 64, 64, 3), dtype=np.uint8)
    out = plots.plot_frames(frames, tmp_path / "frames.png", ncols=8, title="episode 0")
    width, height = _png_size(out)
    assert width >= 8 * 128 and height >= 3 * 128  # frames drawn at >= 128 px
    _check_png(out)
    grey = rng.integers(0, 256, (3, 96, 96), dtype=np.uint8)
    _check_png(plots.plot_frames(grey, tmp_path / "grey.png"), min_width=300, min_height=100)


def test_frame_grid_layout_and_errors():
    frames = np.zeros((5, 4, 6, 3), np.uint8)
    frames[4] = 7
    grid = plots.frame_grid(frames, ncols=2, pad=1)
    assert grid.shape == (3 * 5 - 1, 2 * 7 - 1, 3)
    assert (grid[10:14, 0:6] == 7).all() and (grid[10:14, 7:] == 255).all()
    with pytest.raises(ValueError, match="uint8"):
        plots.frame_grid(np.zeros((2, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="non-empty"):
        plots.frame_grid(np.zeros((0, 4, 4, 3), np.uint8))
