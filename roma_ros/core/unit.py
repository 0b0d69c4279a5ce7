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


MAX_UNIT_NS = 60 * NS_PER_S  # a unit is about a second; anything near a minute is forged or broken
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 384_000
MAX_FRAMES = 16
MAX_FRAME_PIXELS = 4096 * 4096


def unit_problem(unit: Unit) -> tuple[str, str] | None:
    """(reason, message) when a unit (e.g. one received from outside) cannot be processed safely:
    a non-positive or absurd duration, a sample rate that would size a huge allocation, too much
    audio, too many or too large frames, frames that are not RGB uint8. None when it is fine."""
    if not 0 < unit.duration_ns <= MAX_UNIT_NS:
        return "bad_duration", f"unit {unit.index}: duration {unit.duration_ns} ns (must be in (0, 60 s])"
    if not MIN_SAMPLE_RATE <= unit.sample_rate <= MAX_SAMPLE_RATE:
        return "bad_sample_rate", (f"unit {unit.index}: sample rate {unit.sample_rate} Hz (must be in "
                                   f"[{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}])")
    expected = unit.duration_ns * unit.sample_rate // NS_PER_S
    if len(unit.audio) > 2 * expected + unit.sample_rate // 10:
        return "bad_audio_length", f"unit {unit.index}: {len(unit.audio)} audio samples for {expected} expected"
    if len(unit.frames) > MAX_FRAMES:
        return "too_many_frames", f"unit {unit.index}: {len(unit.frames)} frames (at most {MAX_FRAMES})"
    for frame in unit.frames:
        shape = getattr(frame, "shape", ())
        if len(shape) != 3 or shape[2] != 3 or getattr(frame, "dtype", None) != np.uint8:
            return "bad_frame", f"unit {unit.index}: frame of shape {shape} is not RGB uint8 (H, W, 3)"
        if shape[0] * shape[1] > MAX_FRAME_PIXELS or min(shape[:2]) < 1:
            return "bad_frame", f"unit {unit.index}: frame of {shape[1]}x{shape[0]} px"
    return None
