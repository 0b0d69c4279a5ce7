"""Frame sizes for the model: the rules live in the model profile (roma_ros.core.profile).

`roma_frame_size` is the one-step "grid" rule (the roma-tiny profile); `release_resize` performs
the two PIL resizes of the roma-release profile.
"""
from __future__ import annotations

import numpy as np

from roma_ros.core.profile import PATCH_FACTOR, FrameSizing, grid_frame_size

ROMA_MAX_PIXELS = 65_536  # width*height <= 65,536 per frame (docs/model.md section 2)
ROMA_MIN_PIXELS = 4 * PATCH_FACTOR * PATCH_FACTOR  # at least 2x2 merged patches


def roma_frame_size(
    height: int,
    width: int,
    max_pixels: int = ROMA_MAX_PIXELS,
    min_pixels: int = ROMA_MIN_PIXELS,
    factor: int = PATCH_FACTOR,
) -> tuple[int, int]:
    """(height, width) of the "grid" rule: aspect ratio kept as closely as the 28-px grid allows,
    sides multiples of `factor`, area in [min_pixels, max_pixels]. 640x360 becomes 336x168.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio of {width}x{height} is over 200")
    return grid_frame_size(height, width, max_pixels, factor, min_pixels)


def release_resize(rgb: np.ndarray, sizing: FrameSizing) -> np.ndarray:
    """An RGB uint8 frame through the released resize path: the PIL bicubic resizes of
    `sizing.steps` in order (the shrink, then the processor's; a step to the current size is the
    identity, as in PIL)."""
    from PIL import Image

    image = None
    for h, w in sizing.steps(rgb.shape[0], rgb.shape[1]):
        current = rgb.shape[:2] if image is None else (image.size[1], image.size[0])
        if current == (h, w):
            continue
        if image is None:
            image = Image.fromarray(np.ascontiguousarray(rgb))
        image = image.resize((w, h), Image.BICUBIC)
    return np.ascontiguousarray(rgb if image is None else np.asarray(image))
