"""The ROMA/Qwen2.5-VL frame size rule: sides multiples of 28, area within [min, max] pixels."""
from __future__ import annotations

import math

PATCH_FACTOR = 28  # 14-px ViT patches merged 2x2
ROMA_MAX_PIXELS = 65_536  # ROMA_SPEC section 2: width*height <= 65,536 per frame
ROMA_MIN_PIXELS = 4 * PATCH_FACTOR * PATCH_FACTOR  # at least 2x2 merged patches


def roma_frame_size(
    height: int,
    width: int,
    max_pixels: int = ROMA_MAX_PIXELS,
    min_pixels: int = ROMA_MIN_PIXELS,
    factor: int = PATCH_FACTOR,
) -> tuple[int, int]:
    """(height, width) a frame is resized to: aspect ratio kept as closely as the 28-px grid
    allows, sides multiples of `factor`, area in [min_pixels, max_pixels].

    Same rule as Qwen2.5-VL's smart_resize, so frames we resize are left as they are by the
    model's image processor. A 640x360 frame becomes 336x168 (72 video tokens per unit).
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio of {width}x{height} is over 200")
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w
