"""Videos for people: animated GIFs written with Pillow (no ffmpeg needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from dreamer.atomic import atomic_path


def write_gif(path: str | Path, frames: np.ndarray, fps: int = 30, max_side: int = 256) -> None:
    """Write ``frames (N, H, W, 3)`` uint8 as a looping GIF, atomically; large frames are shrunk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(np.ascontiguousarray(f)) for f in frames]
    scale = max_side / max(images[0].size)
    if scale < 1:
        size = (round(images[0].width * scale), round(images[0].height * scale))
        images = [im.resize(size, Image.BILINEAR) for im in images]
    with atomic_path(path) as tmp:
        images[0].save(
            tmp,
            save_all=True,
            append_images=images[1:],
            loop=0,
            duration=max(1, round(1000 / fps)),
            optimize=False,
        )


def read_gif(path: str | Path) -> np.ndarray:
    """Frames of a GIF as ``(N, H, W, 3)`` uint8."""
    with Image.open(path) as image:
        frames = []
        for index in range(getattr(image, "n_frames", 1)):
            image.seek(index)
            frames.append(np.asarray(image.convert("RGB")))
    return np.stack(frames)
