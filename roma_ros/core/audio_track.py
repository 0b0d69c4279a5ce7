"""The audio side of unit assembly: mono chunks with stamps -> 16 kHz samples on a time grid.

Stamp meaning: a chunk's header stamp is the time of its FIRST sample (what audio drivers that
stamp at capture do; a driver that stamps the end of the chunk shifts audio by one chunk, about
20 ms, against video).

Pipeline, all on stream time (stamps), never wall time:

1. Reordering: chunks wait in a heap until a chunk stamped at least `max_delay` later has
   arrived, then leave in stamp order (ties: by content), so arrival order within max_delay
   does not matter. The heap holds at most `max_backlog` of audio (by duration): chunks whose
   stamps stop advancing (a frozen driver clock) would otherwise pile up. When it is full,
   queued chunks whose whole span is already covered by earlier-stamped queued audio are
   dropped first (processing would drop them as duplicates anyway), so a flood under one
   stamp cannot crowd out the real chunks after it; only if that frees no room is the new
   chunk refused. push reports both.
2. Segments: consecutive chunks form a contiguous segment while each stamp lies within
   `tolerance` = min(audio_jitter_tolerance, half the previous chunk) of where the previous
   samples end (expected = segment anchor + input samples / rate). Inside a segment samples
   are placed by count, not by stamp, so stamp jitter neither drops nor duplicates samples;
   the stamp only anchors the segment. A later stamp starts a new segment (the gap stays
   zero); an earlier one means overlap: the samples before `expected` are dropped (a whole
   duplicate chunk is dropped) and the rest continues the segment. Slow drift between the
   microphone clock and the stamps therefore shows up as one small gap or overlap each time
   it exceeds the tolerance.
3. Resampling: each segment has its own streaming resampler (soxr keeps the filter state
   across chunks); a rate change or gap ends the segment and flushes its tail. Output sample j
   of a segment lies at grid index anchor_index + j, anchor_index = round(anchor * 16000).
4. Placement: samples go into a buffer indexed by the absolute 16 kHz grid (index = time *
   16000); a position is written once (overlaps keep the first), positions already handed out
   in a unit are dropped as late. Unfilled positions are zeros and count as not covered.
"""
from __future__ import annotations

import heapq
import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from roma_ros.core.audio_decode import StreamResampler
from roma_ros.core.unit import NS_PER_S



class _ContentOrder:
    """Tie-break for chunks with equal stamps: compare contents, so order never depends on
    arrival."""

    __slots__ = ("samples", "rate")

    def __init__(self, samples: np.ndarray, rate: int):
        self.samples = samples
        self.rate = rate

    @property
    def duration_ns(self) -> int:
        return self.samples.size * NS_PER_S // self.rate

    def __lt__(self, other: "_ContentOrder") -> bool:
        return (self.rate, self.samples.size, self.samples.tobytes()) < (
            other.rate,
            other.samples.size,
            other.samples.tobytes(),
        )


@dataclass
class _Segment:
    anchor_ns: int
    anchor_index: int
    rate: int
    resampler: StreamResampler
    last_chunk_ns: int = 0

    @property
    def expected_ns(self) -> int:
        """Where the next contiguous chunk starts."""
        return self.anchor_ns + self.resampler.samples_in * NS_PER_S // self.rate

    @property
    def output_end(self) -> int:
        """Grid index after the last output sample so far."""
        return self.anchor_index + self.resampler.samples_out


class SampleBuffer:
    """float32 samples on an absolute integer grid from `base` on, with a coverage mask."""

    def __init__(self, base: int):
        self.base = base
        self.end = base  # one past the highest position written (or base)
        self._values = np.zeros(0, np.float32)
        self._filled = np.zeros(0, bool)

    def _reserve(self, stop: int) -> None:
        needed = stop - self.base
        if needed > self._values.size:
            size = max(needed, 2 * self._values.size, 16_000)
            values, filled = np.zeros(size, np.float32), np.zeros(size, bool)
            values[: self._values.size] = self._values
            filled[: self._filled.size] = self._filled
            self._values, self._filled = values, filled

    def place(self, index: int, samples: np.ndarray) -> tuple[int, int]:
        """Write samples at grid positions index...; returns (late, overlapping) counts of
        samples dropped because their position was handed out already or written before."""
        late = max(0, min(self.base - index, samples.size))
        if late:
            samples, index = samples[late:], index + late
        if samples.size == 0:
            return late, 0
        stop = index + samples.size
        self._reserve(stop)
        lo, hi = index - self.base, stop - self.base
        filled = self._filled[lo:hi]
        overlap = int(np.count_nonzero(filled))
        if overlap:
            free = ~filled
            self._values[lo:hi][free] = samples[free]
        else:
            self._values[lo:hi] = samples
        self._filled[lo:hi] = True
        self.end = max(self.end, stop)
        return late, overlap

    def take(self, index: int, count: int) -> tuple[np.ndarray, int]:
        """Hand out positions [index, index + count) (zeros where unfilled) and forget everything
        before their end; returns (samples, number of filled positions)."""
        if index < self.base:
            raise ValueError(f"positions before {self.base} were handed out already")
        self._reserve(index + count)
        lo = index - self.base
        samples = self._values[lo : lo + count].copy()
        covered = int(np.count_nonzero(self._filled[lo : lo + count]))
        keep = lo + count
        self._values = self._values[keep:].copy()
        self._filled = self._filled[keep:].copy()
        self.base = index + count
        self.end = max(self.end, self.base)
        return samples, covered


class PushResult(NamedTuple):
    accepted: bool  # False: the backlog was full even without redundant chunks; nothing queued
    dropped_redundant: int  # queued chunks dropped to make room (covered by earlier audio)


@dataclass
class AudioTrack:
    """Reorders, segments, resamples and places the audio of one stream (see module doc)."""

    out_rate: int
    max_delay_ns: int
    jitter_tolerance_ns: int
    max_backlog_ns: int | None = None
    stats: Counter = field(default_factory=Counter)
    first_ns: int | None = None  # earliest stamp received
    latest_ns: int | None = None  # latest stamp received
    _heap: list = field(default_factory=list)
    _backlog_ns: int = 0  # duration of the chunks in the heap
    _sequence: itertools.count = field(default_factory=itertools.count)
    _segment: _Segment | None = None
    _buffer: SampleBuffer | None = None

    # --- input -----------------------------------------------------------------------------
    def push(self, stamp_ns: int, samples: np.ndarray, rate: int) -> PushResult:
        """Queue one mono float32 chunk whose first sample was taken at stamp_ns, within
        max_backlog (see module doc)."""
        content = _ContentOrder(samples, int(rate))
        duration = content.duration_ns
        dropped = 0
        if self._over_backlog(duration):
            dropped = self._drop_redundant()
            if self._over_backlog(duration):
                self.stats["audio_chunks_backlog_dropped"] += 1
                return PushResult(False, dropped)
        self._backlog_ns += duration
        self.first_ns = stamp_ns if self.first_ns is None else min(self.first_ns, stamp_ns)
        self.latest_ns = stamp_ns if self.latest_ns is None else max(self.latest_ns, stamp_ns)
        entry = (stamp_ns, content, next(self._sequence))
        heapq.heappush(self._heap, entry)
        return PushResult(True, dropped)

    def _over_backlog(self, duration_ns: int) -> bool:
        return self.max_backlog_ns is not None and self._backlog_ns + duration_ns > self.max_backlog_ns

    def _drop_redundant(self) -> int:
        """Drop queued chunks lying wholly inside audio queued with an earlier stamp (ties: the
        earlier arrival stays); returns how many."""
        kept, reach, dropped = [], None, 0
        for entry in sorted(self._heap, key=lambda e: (e[0], e[2])):
            stamp, content, _ = entry
            end = stamp + content.duration_ns
            if reach is not None and end <= reach:
                dropped += 1
                self._backlog_ns -= end - stamp
                continue
            kept.append(entry)
            reach = end if reach is None else max(reach, end)
        if dropped:
            self.stats["audio_chunks_duplicate"] += dropped
            self._heap = kept  # sorted, hence a valid heap
        return dropped

    def _pop(self) -> tuple[int, np.ndarray, int]:
        stamp, content, _ = heapq.heappop(self._heap)
        self._backlog_ns -= content.duration_ns
        return stamp, content.samples, content.rate

    @property
    def started(self) -> bool:
        return self._buffer is not None

    def start(self, base_index: int) -> None:
        """Begin placing samples; grid positions before base_index are never used."""
        self._buffer = SampleBuffer(base_index)

    def release(self, until_ns: int | None = None) -> None:
        """Process queued chunks in stamp order: those stamped at least `max_delay` before the
        latest stamp received, and (forcing, when given) all stamped before until_ns."""
        if self._buffer is None:
            return
        limit = self.latest_ns - self.max_delay_ns if self.latest_ns is not None else None
        if until_ns is not None:
            limit = until_ns - 1 if limit is None else max(limit, until_ns - 1)
        while self._heap and limit is not None and self._heap[0][0] <= limit:
            self._process(*self._pop())

    def release_all(self) -> None:
        """Process every queued chunk and close the segment (the modality went silent)."""
        if self._buffer is None:
            return
        while self._heap:
            self._process(*self._pop())
        self.close_segment()

    # --- segments --------------------------------------------------------------------------
    def _grid_index(self, stamp_ns: int) -> int:
        return (stamp_ns * self.out_rate + NS_PER_S // 2) // NS_PER_S

    def _open_segment(self, stamp_ns: int, rate: int) -> _Segment:
        self.close_segment()
        self._segment = _Segment(stamp_ns, self._grid_index(stamp_ns), rate, StreamResampler(rate, self.out_rate))
        return self._segment

    def close_segment(self) -> None:
        """End the contiguous segment, placing what its resampler still holds."""
        segment, self._segment = self._segment, None
        if segment is not None:
            start = segment.output_end
            self._place(start, segment.resampler.flush())

    def _process(self, stamp_ns: int, samples: np.ndarray, rate: int) -> None:
        self.stats["audio_samples_in"] += samples.size
        segment = self._segment
        if segment is None or segment.rate != rate:
            segment = self._open_segment(stamp_ns, rate)
        else:
            tolerance = min(self.jitter_tolerance_ns, segment.last_chunk_ns // 2)
            offset = stamp_ns - segment.expected_ns
            if offset > tolerance:
                self.stats["audio_gaps"] += 1
                segment = self._open_segment(stamp_ns, rate)
            elif offset < -tolerance:
                overlap = (-offset * rate + NS_PER_S // 2) // NS_PER_S
                if overlap >= samples.size:
                    self.stats["audio_chunks_duplicate"] += 1
                    self.stats["audio_samples_overlap"] += samples.size
                    return
                self.stats["audio_samples_overlap"] += overlap
                samples = samples[overlap:]
        segment.last_chunk_ns = samples.size * NS_PER_S // rate
        start = segment.output_end
        self._place(start, segment.resampler.process(samples))

    def _place(self, index: int, samples: np.ndarray) -> None:
        if samples.size == 0:
            return
        late, overlap = self._buffer.place(index, samples)
        self.stats["audio_samples_late"] += late
        self.stats["audio_samples_overlap"] += overlap

    # --- output ----------------------------------------------------------------------------
    @property
    def done_index(self) -> int | None:
        """Grid index up to which audio is final: nothing processed later lands before it."""
        if self._buffer is None:
            return None
        if self._segment is not None:
            return self._segment.output_end
        return self._buffer.end if self._buffer.end > self._buffer.base else None

    @property
    def end_index(self) -> int | None:
        """One past the last placed sample, or None when nothing was placed."""
        if self._buffer is None or self._buffer.end <= self._buffer.base:
            return None
        return self._buffer.end

    def take(self, index: int, count: int) -> tuple[np.ndarray, int]:
        """Samples for grid positions [index, index + count) and how many were real."""
        return self._buffer.take(index, count)
