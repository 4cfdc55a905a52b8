"""PNG plots of a pipeline run: episode returns, training losses, frame grids.

Figures are built with ``matplotlib.figure.Figure`` (Agg canvas, no pyplot): no display is needed
and no global figure list grows, so nothing has to be closed. Each PNG is written to a temporary
file beside the target and moved into place, so a killed stage never leaves half a PNG.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from dreamer.atomic import atomic_path

DPI = 120
_STEP_COLUMNS = ("gradient_step", "env_step", "wall_seconds")
_RAW = dict(color="tab:blue", alpha=0.3, linewidth=0.8)
_SMOOTH = dict(color="tab:blue", linewidth=1.8)


def _save(fig: Figure, out_png: str | os.PathLike) -> Path:
    """Write ``fig`` to ``out_png`` atomically (temporary file in the same folder, then rename)."""
    out = Path(out_png)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return out


def _read_csv(path: str | os.PathLike, required: Sequence[str]) -> pd.DataFrame:
    df = pd.read_csv(path)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: column '{missing[0]}' is missing (columns: {list(df.columns)})")
    return df


def _steps_formatter() -> ticker.Formatter:
    """Step counts as 500, 20k, 1.5M."""

    def fmt(x: float, _pos: Any) -> str:
        for scale, suffix in ((1e6, "M"), (1e3, "k")):
            if abs(x) >= scale:
                return f"{x / scale:g}{suffix}"
        return f"{x:g}"

    return ticker.FuncFormatter(fmt)


def _note(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")


def _load_eval(eval_json: str | os.PathLike | Mapping | None) -> dict | None:
    """The evaluation summary (``eval/*`` keys), from a dict or ``metrics/eval.json``."""
    if eval_json is None:
        return None
    data = eval_json if isinstance(eval_json, Mapping) else json.loads(Path(eval_json).read_text())
    missing = [
        k for k in ("eval/return_mean", "eval/return_std", "eval/env_steps") if k not in data
    ]
    if missing:
        raise ValueError(f"{eval_json}: evaluation summary has no key '{missing[0]}'")
    return data


def plot_returns(
    train_returns_csv: str | os.PathLike,
    eval_json: str | os.PathLike | Mapping | None,
    out_png: str | os.PathLike,
    title: str | None = None,
) -> Path:
    """Training episode return vs env step (points + rolling mean) and the evaluation mean ± std.

    Args:
        train_returns_csv: ``metrics/train/returns.csv`` (columns ``env_step``, ``return``).
        eval_json: ``metrics/eval.json`` (or its dict) with ``eval/return_mean``, ``…/return_std``,
            ``…/env_steps`` and optionally ``…/episodes`` and ``…/random_return_mean`` (drawn as a
            dashed line: the random policy on the same episodes); None to leave evaluation out.
        out_png: the PNG to write.
        title: e.g. the env id.
    """
    df = _read_csv(train_returns_csv, ["env_step", "return"])
    evaluation = _load_eval(eval_json)
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    if len(df):
        df = df.sort_values("env_step", kind="stable")
        window = int(min(50, max(3, len(df) // 10)))
        ax.scatter(
            df["env_step"],
            df["return"],
            s=12,
            color="tab:blue",
            alpha=0.35,
            linewidths=0,
            label="training episode",
        )
        rolling = df["return"].rolling(window, min_periods=1).mean()
        ax.plot(
            df["env_step"],
            rolling,
            color="tab:blue",
            linewidth=2,
            label=f"rolling mean ({window} episodes)",
        )
    if evaluation is not None:
        episodes = evaluation.get("eval/episodes")
        label = "evaluation mean ± std" + (f" ({episodes} episodes)" if episodes else "")
        ax.errorbar(
            [evaluation["eval/env_steps"]],
            [evaluation["eval/return_mean"]],
            yerr=[evaluation["eval/return_std"]],
            fmt="D",
            markersize=7,
            color="tab:orange",
            ecolor="tab:orange",
            elinewidth=2,
            capsize=6,
            zorder=5,
            label=label,
        )
        if "eval/random_return_mean" in evaluation:
            ax.axhline(
                evaluation["eval/random_return_mean"],
                color="0.45",
                linestyle="--",
                linewidth=1.2,
                label="random policy, same evaluation episodes",
            )
    if not len(df) and evaluation is None:
        _note(ax, "no finished episodes yet")
    ax.set_title(f"{title}: episode return" if title else "Episode return")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode return")
    ax.xaxis.set_major_formatter(_steps_formatter())
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=9)
    return _save(fig, out_png)


def _y_scale(values: np.ndarray) -> tuple[str, dict]:
    """'log' for positive values spanning > 2 decades, 'symlog' for signed ones, else linear."""
    values = values[np.isfinite(values)]
    magnitude = np.abs(values[values != 0])
    if len(magnitude) < 2 or magnitude.max() / magnitude.min() < 100:
        return "linear", {}
    if (values > 0).all():
        return "log", {}
    if (values < 0).any() and (values > 0).any():
        return "symlog", {"linthresh": float(np.quantile(magnitude, 0.1))}
    return "linear", {}


def plot_losses(
    losses_csv: str | os.PathLike,
    out_png: str | os.PathLike,
    title: str | None = None,
    ncols: int = 3,
) -> Path:
    """One small panel per ``loss/*`` column (then any other metric, then ``updates_per_second``)
    vs ``gradient_step``: raw values light, an exponential moving average on top.

    Args:
        losses_csv: ``metrics/train/losses.csv``.
        out_png: the PNG to write.
        title: e.g. the env id.
        ncols: panels per row.
    """
    df = _read_csv(losses_csv, ["gradient_step"])
    numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c].dtype)]
    losses = [c for c in numeric if c.startswith("loss/")]
    others = [
        c
        for c in numeric
        if c not in losses and c not in _STEP_COLUMNS and c != "updates_per_second"
    ]
    names = losses + others + (["updates_per_second"] if "updates_per_second" in df else [])
    ncols = max(1, min(ncols, len(names)))
    nrows = max(1, math.ceil(len(names) / ncols))
    fig = Figure(figsize=(3.4 * ncols + 0.4, 2.5 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True).ravel()
    span = max(2, len(df) // 20)
    for ax, name in zip(axes, names, strict=False):  # spare panels hidden below
        values = df[name].astype(float)
        ax.plot(df["gradient_step"], values, **_RAW)
        ax.plot(df["gradient_step"], values.ewm(span=span, ignore_na=True).mean(), **_SMOOTH)
        scale, kwargs = _y_scale(values.to_numpy())
        ax.set_yscale(scale, **kwargs)
        ax.set_title(name, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=8)
        ax.xaxis.set_major_formatter(_steps_formatter())
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    for ax in axes[: len(names)][-ncols:]:
        ax.set_xlabel("gradient steps", fontsize=9)
        ax.xaxis.set_tick_params(labelbottom=True)
    if not names or not len(df):
        _note(axes[0], "no training metrics yet")
        axes[0].set_visible(True)
    fig.suptitle(f"{title}: training metrics" if title else "Training metrics")
    return _save(fig, out_png)


def frame_grid(frames: np.ndarray, ncols: int = 8, pad: int = 2) -> np.ndarray:
    """Tile ``(N, H, W, 3)`` uint8 frames into one ``(rows·(H+pad)-pad, …, 3)`` image."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[..., None]
    if (
        frames.ndim != 4
        or frames.shape[-1] not in (1, 3)
        or frames.dtype != np.uint8
        or not len(frames)
    ):
        raise ValueError(
            f"frames: expected a non-empty uint8 array (N, H, W, 3), got {frames.dtype} "
            f"{frames.shape}"
        )
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    N, H, W, _ = frames.shape
    ncols = max(1, min(ncols, N))
    nrows = math.ceil(N / ncols)
    grid = np.full((nrows * (H + pad) - pad, ncols * (W + pad) - pad, 3), 255, dtype=np.uint8)
    for i, frame in enumerate(frames):
        r, c = divmod(i, ncols)
        grid[r * (H + pad) : r * (H + pad) + H, c * (W + pad) : c * (W + pad) + W] = frame
    return grid


def plot_frames(
    frames: np.ndarray,
    out_png: str | os.PathLike,
    ncols: int = 8,
    title: str | None = None,
) -> Path:
    """A grid of frames (e.g. every k-th frame of an evaluation episode), for readers without
    a video player.

    Args:
        frames: ``(N, H, W, 3)`` uint8 (``(N, H, W)`` grey also accepted).
        out_png: the PNG to write.
        ncols: frames per row.
        title: drawn above the grid.
    """
    grid = frame_grid(frames, ncols)
    # show every frame at least ~128 px on its short side, whole figure at most ~1600 px wide
    H, W = np.asarray(frames).shape[1:3]
    zoom = min(max(1.0, 128 / min(H, W)), 1600 / grid.shape[1])
    title_in = 0.1 + 0.25 * (title.count("\n") + 1) if title else 0.0
    fig = Figure(figsize=(grid.shape[1] * zoom / DPI, grid.shape[0] * zoom / DPI + title_in))
    ax = fig.add_axes((0, 0, 1, grid.shape[0] * zoom / DPI / fig.get_figheight()))
    ax.imshow(grid, interpolation="nearest")
    ax.set_axis_off()
    if title:
        fig.suptitle(title, y=1 - 0.1 / fig.get_figheight(), va="top", fontsize=11)
    return _save(fig, out_png)
