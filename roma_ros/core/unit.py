"""The multimodal unit: what the synchronizer produces and the engine consumes (no ROS types)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SAMPLE_RATE = 16_000
NS_PER_S = 1_000_000_000


@dataclass
class Unit:
    """All audio and video of one interval [start_ns, start_ns + duration_ns) of stream time.

    frames: RGB uint8 arrays (H, W, 3), oldest first, already resized by the model profile's rule.
    audio: float32 mono in [-1, 1], exactly duration * sample_rate samples.
    """

    index: int
    start_ns: int
    duration_ns: int
    frames: list[np.ndarray]
    audio: np.ndarray
    sample_rate: int = SAMPLE_RATE
    frame_stamps_ns: list[int] = field(default_factory=list)
    audio_coverage: float = 1.0
    repeated_frames: int = 0
    stream_restart: bool = False
    frame_id: str = ""
    source_hw: tuple[int, int] = (0, 0)  # camera (height, width) the frames were resized from; 0 = unknown
    frame_rule: str = ""  # the sizing rule that made the frames (model profile); "" = unknown

    @property
    def end_ns(self) -> int:
        return self.start_ns + self.duration_ns
