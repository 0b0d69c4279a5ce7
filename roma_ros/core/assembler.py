"""The unit assembler: camera frames + microphone chunks -> 1-second multimodal units (no rclpy).

Everything runs on stream time (header stamps); the output depends only on message contents and
stamps, not on when messages arrive, as long as every message arrives before any message of
the same modality stamped more than `max_delay` after it. The same input gives the same units
live, at any replay speed, and offline.

Unit grid: unit boundaries lie on multiples of D = `unit_duration` of the sensor clock (so the
same bag gives the same units wherever playback starts). A stream's first unit (index 0,
`stream_restart` True) is the one containing the earliest stamp of either modality; unit k
covers [t0 + kD, t0 + (k+1)D).

Frames (lazy): a frame is kept only as (stamp, payload); `decode(payload)` runs only for the
frames a unit actually uses, so every other frame costs a few integer operations. Unit k has
`frames_per_unit` (F) slots [t0 + kD + iD/F, t0 + kD + (i+1)D/F); slot i takes the frame nearest
to its middle, t0 + kD + (i + 1/2)D/F (ties: the earlier frame; equal stamps: the first to
arrive). A slot without a frame (or whose frame fails to decode) repeats the previous frame of
the stream, counted in `repeated_frames`; at the very start of a stream, before any frame,
empty slots take the unit's first real frame instead. A unit has no frames only when its
stream has had none yet (an audio-only start).

Audio: see audio_track (stamp = first sample; jitter, gaps, overlaps, streaming resampling).
Each unit has exactly D * 16000 samples, zeros where nothing was received (`audio_coverage` is
the fraction that was real), clipped to [-1, 1]. Input samples beyond +-AUDIO_INPUT_LIMIT are
clipped to it on arrival (errors.audio_out_of_range): huge finite values (3e38) would overflow
the resampler's filter into NaN for the chunks around them. Non-finite samples are never let
out: any in an assembled unit (there should be none) are zeroed (errors.nonfinite_audio).

Emission: unit k is emitted when
  - video has passed its end plus max_delay (a frame stamped >= end + max_delay arrived) and
    audio is final up to its end (chunks are released max_delay after their stamp, so this is
    "audio has passed its end plus max_delay"); or
  - a modality marked silent (the node does so after `modality_timeout` without messages on its
    clock) stops gating: the other one alone decides; both silent: everything received is
    emitted (as at end of input, `flush()`); or
  - one modality's stamps are ahead of the unit end by max_delay + modality_timeout: the lagging
    one stops gating for that unit (keeps memory bounded when one input stalls or never came,
    also offline where no clock runs). The unit carries what exists.

Streams: see timeline. A lone stamp off the stream is an outlier (dropped, errors.stamp_outlier).
A jump confirmed by `jump_confirm_count` agreeing messages and contradicted by no input either
continues the stream (a pause of at most `max_forward_jump`) or, backwards beyond
`restart_tolerance` (bag loop, simulator restart) or forward beyond `max_forward_jump`, flushes
the current stream and starts a new one (index 0, `stream_restart` True).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from roma_ros.core.audio_track import AudioTrack
from roma_ros.core.errors import DecodeError
from roma_ros.core.image_decode import decode_frame, source_size
from roma_ros.core.profile import FrameSizing
from roma_ros.core.resize import ROMA_MAX_PIXELS
from roma_ros.core.timeline import Decision, StreamTimeline
from roma_ros.core.unit import NS_PER_S, SAMPLE_RATE, Unit

VIDEO = "video"
AUDIO = "audio"
MODALITIES = (VIDEO, AUDIO)
AUDIO_GROUP_LIMIT = 256  # held audio chunks while a jump awaits confirmation: 2.5 s of 10 ms chunks
AUDIO_INPUT_LIMIT = 16.0  # 24 dB over full scale: beyond it a float source is broken, not loud


def _ns(seconds: float) -> int:
    return int(round(seconds * NS_PER_S))


@dataclass(frozen=True)
class AssemblerConfig:
    """Timing and size settings (seconds). See the module docstring for what they do."""

    unit_duration: float = 1.0
    frames_per_unit: int = 2
    max_pixels: int = ROMA_MAX_PIXELS
    frame_rule: str = "grid"  # the model profile's frame sizing rule: grid | release
    max_delay: float = 0.2
    modality_timeout: float = 2.0
    restart_tolerance: float = 1.0
    max_forward_jump: float = 5.0
    jump_confirm_count: int = 3
    audio_jitter_tolerance: float = 0.03
    sample_rate: int = SAMPLE_RATE

    def validate(self) -> "AssemblerConfig":
        """Raise ValueError for inconsistent settings; returns self."""
        duration_ns = _ns(self.unit_duration)
        if duration_ns <= 0 or (duration_ns * self.sample_rate) % NS_PER_S:
            raise ValueError(
                f"unit_duration {self.unit_duration} s must be positive and a whole number of "
                f"{self.sample_rate} Hz samples"
            )
        if self.frames_per_unit < 1:
            raise ValueError(f"frames_per_unit must be >= 1, got {self.frames_per_unit}")
        self.sizing.validate()
        if self.max_delay < 0 or self.modality_timeout <= 0 or self.audio_jitter_tolerance < 0:
            raise ValueError("max_delay and audio_jitter_tolerance must be >= 0, "
                             "modality_timeout > 0")
        if self.restart_tolerance <= self.max_delay:
            raise ValueError(
                f"restart_tolerance ({self.restart_tolerance} s) must exceed max_delay "
                f"({self.max_delay} s): reordering within max_delay is not a restart"
            )
        if self.max_forward_jump <= self.max_delay:
            raise ValueError("max_forward_jump must exceed max_delay")
        if self.jump_confirm_count < 2:
            raise ValueError(f"jump_confirm_count must be >= 2 (one message cannot confirm a jump), "
                             f"got {self.jump_confirm_count}")
        return self

    @property
    def sizing(self) -> FrameSizing:
        return FrameSizing(rule=self.frame_rule, max_pixels=self.max_pixels)

    @property
    def duration_ns(self) -> int:
        return _ns(self.unit_duration)

    @property
    def samples_per_unit(self) -> int:
        return self.duration_ns * self.sample_rate // NS_PER_S

    @property
    def audio_backlog_ns(self) -> int:
        """Most audio (by duration) waiting in the reorder queue: before a stream starts audio
        waits up to max_delay + modality_timeout, afterwards max_delay; one unit of margin."""
        return _ns(self.max_delay + self.modality_timeout + self.unit_duration)


@dataclass
class _FrameRef:
    key: tuple[int, int]  # (distance to the slot's sample time, stamp): smaller wins
    stamp_ns: int
    payload: Any
    frame_id: str


@dataclass
class _Stream:
    """State of one stream (from a start or restart to the next restart)."""

    audio: AudioTrack
    slots: dict[int, list] = field(default_factory=dict)  # grid unit -> F best frames
    first_video_ns: int | None = None
    latest_video_ns: int | None = None
    frames_end_ns: int | None = None  # one past the latest frame stamp
    first_unit: int | None = None  # grid unit (start // D) of index 0; None before the start
    next_unit: int = 0
    last_frame: tuple | None = None  # (rgb, stamp_ns, frame_id) of the latest frame used

    @property
    def started(self) -> bool:
        return self.first_unit is not None


class UnitAssembler:
    """Feed frames and audio chunks in any order (within max_delay); get Units back in order.

    `decode(payload) -> RGB uint8 (h, w, 3)` turns a frame payload into a resized frame; the
    default decodes roma_ros.core.image_decode RawImage/CompressedImage payloads. A DecodeError
    from it is counted and handed to `on_error`, and the slot repeats a frame. `on_error` also
    gets the input the assembler itself rejects or repairs (reasons stamp_outlier,
    audio_backlog, audio_out_of_range, nonfinite_audio).
    Not thread-safe: call from one thread.
    """

    def __init__(
        self,
        config: AssemblerConfig | None = None,
        decode: Callable[[Any], np.ndarray] | None = None,
        on_error: Callable[[DecodeError], None] | None = None,
    ):
        self.config = (config or AssemblerConfig()).validate()
        sizing = self.config.sizing
        self._decode = decode or (lambda payload: decode_frame(payload, sizing=sizing))
        self._source_hw: tuple[int, int] = (0, 0)  # camera size of the latest decoded frame
        self._on_error = on_error or (lambda error: None)
        self.stats: Counter = Counter()
        self._duration = self.config.duration_ns
        self._samples = self.config.samples_per_unit
        self._max_delay = _ns(self.config.max_delay)
        self._timeout = _ns(self.config.modality_timeout)
        self._timeline = StreamTimeline(
            _ns(self.config.restart_tolerance),
            _ns(self.config.max_forward_jump),
            slack_ns=self._timeout,
            confirm_count=self.config.jump_confirm_count,
            group_limits={AUDIO: AUDIO_GROUP_LIMIT},
        )
        self._silent: set[str] = set()
        self._draining = False
        self._stream = self._new_stream()

    def _new_stream(self) -> _Stream:
        track = AudioTrack(
            self.config.sample_rate,
            self._max_delay,
            _ns(self.config.audio_jitter_tolerance),
            max_backlog_ns=self.config.audio_backlog_ns,
            stats=self.stats,
        )
        return _Stream(audio=track)

    def _error(self, reason: str, message: str) -> None:
        self._on_error(DecodeError(reason, message))

    # --- public input ----------------------------------------------------------------------
    def add_frame(self, stamp_ns: int, payload: Any, frame_id: str = "") -> list[Unit]:
        """One camera frame (payload is decoded only if a unit uses it)."""
        return self._add(VIDEO, (stamp_ns, payload, frame_id))

    def add_audio(self, stamp_ns: int, samples: np.ndarray, sample_rate: int) -> list[Unit]:
        """One mono float32 audio chunk whose first sample was taken at stamp_ns."""
        samples = np.asarray(samples, dtype=np.float32)
        if samples.ndim != 1:
            raise DecodeError("bad_shape", f"audio chunk must be mono (1-D), got {samples.shape}")
        if samples.size == 0:
            raise DecodeError("empty_audio", "audio chunk without samples")
        return self._add(AUDIO, (stamp_ns, _bounded(samples, self._error), int(sample_rate)))

    def mark_silent(self, modality: str) -> list[Unit]:
        """The modality has been silent for modality_timeout: stop waiting for it (until its
        next message). Returns the units this lets out."""
        if modality not in MODALITIES:
            raise ValueError(f"unknown modality {modality!r}")
        if modality in self._silent:
            return []
        self._silent.add(modality)
        if modality == AUDIO:
            self._stream.audio.release_all()
        self._try_start()
        return self._emit_ready()

    def flush(self) -> list[Unit]:
        """End of input: emit every unit that has any data. Later input continues the stream."""
        return self._apply(self._timeline.end_of_input()) + self._drain()

    @property
    def silent(self) -> frozenset:
        return frozenset(self._silent)

    # --- stream bookkeeping ----------------------------------------------------------------
    def _add(self, modality: str, item: tuple) -> list[Unit]:
        stamp = item[0]
        if stamp <= 0:
            raise DecodeError(
                "unstamped",
                f"{modality} message has header.stamp {stamp} ns; the driver must stamp "
                "messages with the capture time",
            )
        decision = self._timeline.offer(modality, stamp, item)
        if decision.stale:
            self.stats[f"{modality}_stale"] += 1
            return []
        return self._apply(decision)

    def _apply(self, decision: Decision) -> list[Unit]:
        for outlier in decision.outliers:
            self.stats["stamp_glitches"] += 1
            self._error("stamp_outlier", self._outlier_text(outlier.modality, outlier.stamp))
        units: list[Unit] = []
        if decision.restart:
            units += self._drain()
            self._stream = self._new_stream()
            self.stats["stream_restarts"] += 1
        for entry in decision.ingest:
            units += self._ingest(entry.modality, entry.item)
        return units

    def _outlier_text(self, modality: str, stamp: int) -> str:
        stream = self._timeline.stream
        where = "" if stream.empty else f", {(stamp - stream.top) / NS_PER_S:+.3f} s from the stream"
        return (f"{modality} message stamped {stamp / NS_PER_S:.3f} s{where} dropped: no "
                f"{self.config.jump_confirm_count} agreeing messages confirmed the jump")

    def _ingest(self, modality: str, item: tuple) -> list[Unit]:
        self._silent.discard(modality)
        if modality == VIDEO:
            self._ingest_frame(*item)
        else:
            self._ingest_audio(*item)
        self._try_start()
        return self._emit_ready()

    def _ingest_frame(self, stamp: int, payload: Any, frame_id: str) -> None:
        stream = self._stream
        self.stats["frames_in"] += 1
        unit = stamp // self._duration
        if stream.started and unit < stream.next_unit:
            self.stats["frames_late"] += 1
            return
        if stream.first_video_ns is None or stamp < stream.first_video_ns:
            stream.first_video_ns = stamp
        if stream.latest_video_ns is None or stamp > stream.latest_video_ns:
            stream.latest_video_ns = stamp
            stream.frames_end_ns = stamp + 1
        per_unit = self.config.frames_per_unit
        unit_start = unit * self._duration
        slot = (stamp - unit_start) * per_unit // self._duration
        sample_time = unit_start + (2 * slot + 1) * self._duration // (2 * per_unit)
        key = (abs(stamp - sample_time), stamp)
        slots = stream.slots.setdefault(unit, [None] * per_unit)
        current = slots[slot]
        if current is None or key < current.key:
            slots[slot] = _FrameRef(key, stamp, payload, frame_id)
        elif key == current.key:
            self.stats["frames_duplicate"] += 1

    def _ingest_audio(self, stamp: int, samples: np.ndarray, rate: int) -> None:
        self.stats["audio_chunks_in"] += 1
        stream = self._stream
        pushed = stream.audio.push(stamp, samples, rate)
        if pushed.dropped_redundant:
            self._backlog_error(f"{pushed.dropped_redundant} waiting audio chunks that repeat earlier audio")
        if not pushed.accepted:
            self._backlog_error(f"audio chunk stamped {stamp / NS_PER_S:.3f} s")
            return
        if stream.started:
            stream.audio.release()

    def _backlog_error(self, what: str) -> None:
        self._error("audio_backlog", f"{what} dropped: {self.config.audio_backlog_ns / NS_PER_S:g} s of audio "
                    "already wait for later stamps (are the audio stamps advancing?)")

    def _try_start(self, force: bool = False) -> None:
        """Fix the stream's first unit once every modality's earliest stamp is final (or the
        modality is silent, or lags by modality_timeout)."""
        stream = self._stream
        if stream.started:
            return
        first = {VIDEO: stream.first_video_ns, AUDIO: stream.audio.first_ns}
        latest = {VIDEO: stream.latest_video_ns, AUDIO: stream.audio.latest_ns}
        if all(value is None for value in first.values()):
            return
        if not force:
            for modality, other in ((VIDEO, AUDIO), (AUDIO, VIDEO)):
                if modality in self._silent:
                    continue
                if first[modality] is not None and latest[modality] >= first[modality] + self._max_delay:
                    continue
                if first[other] is not None and (
                    latest[other] - first[other] >= self._max_delay + self._timeout
                ):
                    continue
                return
        start_unit = min(v for v in first.values() if v is not None) // self._duration
        stream.first_unit = stream.next_unit = start_unit
        stream.audio.start(start_unit * self._samples)
        if AUDIO in self._silent:
            stream.audio.release_all()
        else:
            stream.audio.release()

    def _drain(self) -> list[Unit]:
        """Emit every unit of the current stream that has any data."""
        self._try_start(force=True)
        self._stream.audio.release_all()
        self._draining = True
        try:
            return self._emit_ready()
        finally:
            self._draining = False

    # --- emission --------------------------------------------------------------------------
    def _data_end_ns(self) -> int | None:
        stream = self._stream
        ends = [stream.frames_end_ns] if stream.frames_end_ns is not None else []
        audio_end = stream.audio.end_index
        if audio_end is not None:
            ends.append(-(-audio_end * NS_PER_S // self.config.sample_rate))
        return max(ends) if ends else None

    def _unit_ready(self, unit: int) -> bool:
        stream = self._stream
        end = (unit + 1) * self._duration
        if self._draining or self._silent.issuperset(MODALITIES):
            data_end = self._data_end_ns()
            return data_end is not None and unit * self._duration < data_end
        video_ok = VIDEO in self._silent or (
            stream.latest_video_ns is not None and stream.latest_video_ns >= end + self._max_delay
        )
        done = stream.audio.done_index
        audio_ok = AUDIO in self._silent or (done is not None and done >= (unit + 1) * self._samples)
        if video_ok and audio_ok:
            return True
        leads = [v for v in (stream.latest_video_ns, stream.audio.latest_ns) if v is not None]
        if leads and max(leads) - self._timeout >= end + self._max_delay:
            self.stats["units_lagging_modality"] += 1
            return True
        return False

    def _emit_ready(self) -> list[Unit]:
        units = []
        stream = self._stream
        while stream.started and self._unit_ready(stream.next_unit):
            units.append(self._build_unit(stream.next_unit))
        return units

    def _build_unit(self, unit: int) -> Unit:
        stream = self._stream
        first_sample = unit * self._samples
        end_sample = first_sample + self._samples
        end_ns = (unit + 1) * self._duration
        done = stream.audio.done_index
        if done is None or done < end_sample:  # audio lags or stopped: use what exists
            stream.audio.release(until_ns=end_ns)
            done = stream.audio.done_index
            if done is None or done < end_sample:
                stream.audio.close_segment()
        audio, covered = stream.audio.take(first_sample, self._samples)
        finite = np.isfinite(audio)
        if not finite.all():  # guaranteed output: the input bound should make this unreachable
            self.stats["audio_samples_nonfinite"] += int(audio.size - np.count_nonzero(finite))
            audio[~finite] = 0.0
            self._error("nonfinite_audio", f"unit at {unit * self._duration / NS_PER_S:.3f} s: "
                        "non-finite samples after resampling replaced by silence")
        np.clip(audio, -1.0, 1.0, out=audio)
        frames, stamps, repeated, frame_id = self._select_frames(unit)
        stream.next_unit = unit + 1
        self.stats["units_out"] += 1
        self.stats["frames_repeated"] += repeated
        return Unit(
            index=unit - stream.first_unit,
            start_ns=unit * self._duration,
            duration_ns=self._duration,
            frames=frames,
            audio=audio,
            sample_rate=self.config.sample_rate,
            frame_stamps_ns=stamps,
            audio_coverage=covered / self._samples,
            repeated_frames=repeated,
            stream_restart=unit == stream.first_unit,
            frame_id=frame_id,
            source_hw=self._source_hw if frames else (0, 0),
            frame_rule=self.config.frame_rule,
        )

    def _decode_ref(self, ref: _FrameRef) -> np.ndarray | None:
        try:
            frame = self._decode(ref.payload)
        except ValueError as exc:  # DecodeError, or a ValueError from a custom decoder
            error = exc if isinstance(exc, DecodeError) else DecodeError("decode_failed", str(exc))
            self.stats["frame_decode_errors"] += 1
            self._on_error(error)
            return None
        self.stats["frames_decoded"] += 1
        self._source_hw = source_size(ref.payload) or (0, 0)
        return frame

    def _select_frames(self, unit: int) -> tuple[list, list, int, str]:
        stream = self._stream
        refs = stream.slots.pop(unit, None) or [None] * self.config.frames_per_unit
        chosen: list = []  # (rgb, stamp, frame_id) or None while no frame was seen yet
        repeated = 0
        for ref in refs:
            frame = self._decode_ref(ref) if ref is not None else None
            if frame is not None:
                stream.last_frame = (frame, ref.stamp_ns, ref.frame_id)
                chosen.append(stream.last_frame)
            elif stream.last_frame is not None:
                chosen.append(stream.last_frame)
                repeated += 1
            else:
                chosen.append(None)
        if None in chosen:  # start of a stream: fill from the unit's first real frame
            fill = next((entry for entry in chosen if entry is not None), None)
            if fill is None:
                return [], [], 0, ""
            repeated += chosen.count(None)
            chosen = [fill if entry is None else entry for entry in chosen]
        frame_id = stream.last_frame[2] if stream.last_frame is not None else ""
        return [c[0] for c in chosen], [c[1] for c in chosen], repeated, frame_id


def _bounded(samples: np.ndarray, error: Callable[[str, str], None]) -> np.ndarray:
    """samples with non-finite values zeroed and the rest clipped to +-AUDIO_INPUT_LIMIT (each
    repair reported); the same array when there is nothing to repair (the common case)."""
    peak = float(np.max(np.abs(samples)))
    if peak <= AUDIO_INPUT_LIMIT:  # False for NaN too
        return samples
    finite = np.isfinite(samples)
    if not finite.all():
        error("nonfinite_audio", f"{samples.size - np.count_nonzero(finite)} non-finite audio "
              "samples replaced by silence")
        samples = np.where(finite, samples, np.float32(0))
    if np.max(np.abs(samples)) > AUDIO_INPUT_LIMIT:
        error("audio_out_of_range", f"audio samples up to {float(np.max(np.abs(samples))):.3g} "
              f"clipped to +-{AUDIO_INPUT_LIMIT:g} (float PCM full scale is 1.0)")
        samples = np.clip(samples, -AUDIO_INPUT_LIMIT, AUDIO_INPUT_LIMIT)
    return samples
