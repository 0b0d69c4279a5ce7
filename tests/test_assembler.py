"""The unit assembler on stream time: property tests over random streams (jitter, drops,
reordering within max_delay, rate mismatch, restarts) and targeted tests of each rule."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roma_ros.core.assembler import AUDIO, VIDEO, AssemblerConfig, UnitAssembler
from roma_ros.core.audio_decode import AudioFormat, pcm_to_mono
from roma_ros.core.errors import DecodeError

S = 1_000_000_000
MS = 1_000_000
N = 16_000
CONFIG = AssemblerConfig()  # 1 s units, 2 frames, max_delay 0.2 s, timeout 2 s
MAX_DELAY = int(CONFIG.max_delay * S)


def frame_of(payload):
    """Test decoder: the payload is the frame's stamp; the 'frame' is a 1x1 image naming it."""
    return np.array([[[payload % 256, 0, 0]]], np.uint8)


@dataclass
class Message:
    modality: str
    stamp: int
    payload: object  # frame: its stamp; audio: float32 samples
    rate: int = N


def feed(assembler: UnitAssembler, messages, flush: bool = True):
    units = []
    for m in messages:
        if m.modality == VIDEO:
            units += assembler.add_frame(m.stamp, m.payload)
        else:
            units += assembler.add_audio(m.stamp, m.payload, m.rate)
    if flush:
        units += assembler.flush()
    return units


def run(messages, config=CONFIG, flush=True):
    assembler = UnitAssembler(config, decode=lambda p: frame_of(p))
    return feed(assembler, messages, flush), assembler


@dataclass
class Stream:
    messages: list  # in stamp order
    kept_audio: np.ndarray  # every audio value that was sent, in order
    frame_stamps: list


def make_stream(seed, start, seconds, fps, frame_drop, frame_jitter_ms, rate, chunk_ms,
                chunk_drop, audio_jitter_ms, drift_ppm, first_value=0) -> Stream:
    """Camera at `fps` and microphone at `rate`, stamps with jitter and drift, random drops.
    Audio values are unique (sample counter * 1e-6) so losses and duplicates are visible."""
    rng = np.random.default_rng(seed)
    messages, frame_stamps = [], []
    period = S / fps
    for i in range(int(seconds * fps)):
        stamp = start + int(i * period + rng.uniform(-1, 1) * frame_jitter_ms * MS)
        if rng.random() >= frame_drop:
            messages.append(Message(VIDEO, stamp, stamp))
            frame_stamps.append(stamp)
    chunk = max(1, int(rate * chunk_ms / 1000))
    kept, count = [], first_value
    for k in range(int(seconds * rate / chunk)):
        values = (np.arange(count, count + chunk) + 1).astype(np.float32) * np.float32(1e-6)
        true_time = k * chunk / rate * (1 + drift_ppm * 1e-6)
        stamp = start + int(true_time * S + rng.uniform(-1, 1) * audio_jitter_ms * MS)
        count += chunk
        if k == 0 or rng.random() >= chunk_drop:  # keep the first chunk: it anchors the test
            messages.append(Message(AUDIO, stamp, values, rate))
            kept.append(values)
    messages.sort(key=lambda m: m.stamp)
    return Stream(messages, np.concatenate(kept), frame_stamps)


def shuffled_arrival(messages, seed, audio_skew_s=0.0):
    """A random arrival order within the contract: each message is late by less than max_delay
    relative to its own modality; all audio is additionally late by a constant skew."""
    rng = np.random.default_rng(seed)
    skew = int(audio_skew_s * S)
    keys = [m.stamp + int(rng.uniform(0, MAX_DELAY * 0.99)) + (skew if m.modality == AUDIO else 0)
            for m in messages]
    return [messages[i] for i in np.argsort(keys, kind="stable")]


def same_units(a, b) -> bool:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (x.index, x.start_ns, x.frame_stamps_ns, x.repeated_frames, x.stream_restart) == (
            y.index, y.start_ns, y.frame_stamps_ns, y.repeated_frames, y.stream_restart)
        assert x.audio_coverage == y.audio_coverage
        assert np.array_equal(x.audio, y.audio)
        assert all(np.array_equal(f, g) for f, g in zip(x.frames, y.frames))
    return True


def check_unit_shape(units):
    for previous, unit in zip(units, units[1:]):
        if not unit.stream_restart:
            assert unit.index == previous.index + 1
            assert unit.start_ns == previous.start_ns + S
    for unit in units:
        assert unit.audio.shape == (N,) and unit.audio.dtype == np.float32
        assert unit.start_ns % S == 0 and unit.duration_ns == S
        assert unit.stream_restart == (unit.index == 0)
        assert len(unit.frames) in (0, 2)


def nearest_frame_stamps(unit, stamps, previous):
    """Brute force: each slot's frame is the one nearest its middle (ties: earlier), else the
    previous frame used."""
    chosen = []
    for slot in range(2):
        lo, hi = unit.start_ns + slot * S // 2, unit.start_ns + (slot + 1) * S // 2
        middle = (lo + hi) // 2
        inside = [s for s in stamps if lo <= s < hi]
        if inside:
            previous = min(inside, key=lambda s: (abs(s - middle), s))
        chosen.append(previous)
    return chosen, previous


stream_params = dict(
    seed=st.integers(0, 2**31),
    start=st.integers(1_000 * S, 2_000 * S),
    seconds=st.floats(2.0, 5.0),
    fps=st.sampled_from([1.0, 5.0, 15.0, 29.97, 30.0, 60.0]),
    frame_drop=st.sampled_from([0.0, 0.1, 0.5]),
    frame_jitter_ms=st.floats(0, 10),
    chunk_ms=st.sampled_from([20, 21.3, 32, 64, 100]),
    chunk_drop=st.sampled_from([0.0, 0.0, 0.1, 0.3]),
    audio_jitter_ms=st.floats(0, 4),
    drift_ppm=st.floats(-300, 300),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**stream_params, order_seed=st.integers(0, 2**31), skew=st.floats(0, 1.0))
def test_16k_audio_is_never_lost_or_duplicated_and_arrival_order_does_not_matter(
    seed, start, seconds, fps, frame_drop, frame_jitter_ms, chunk_ms, chunk_drop,
    audio_jitter_ms, drift_ppm, order_seed, skew,
):
    stream = make_stream(seed, start, seconds, fps, frame_drop, frame_jitter_ms, N, chunk_ms,
                         chunk_drop, audio_jitter_ms, drift_ppm)
    units, assembler = run(stream.messages)
    check_unit_shape(units)
    # every sent sample appears exactly once, in order (zeros are gaps)
    audio = np.concatenate([u.audio for u in units])
    assert np.array_equal(audio[audio != 0], stream.kept_audio)
    assert sum(round(u.audio_coverage * N) for u in units) == stream.kept_audio.size
    if chunk_drop == 0:  # units inside the audio's span are fully covered
        audio_stamps = [m.stamp for m in stream.messages if m.modality == AUDIO]
        inside = [u for u in units
                  if u.start_ns >= audio_stamps[0] + 10 * MS and u.end_ns <= audio_stamps[-1]]
        assert all(u.audio_coverage == 1.0 for u in inside)
    # the frames are the nearest to each slot's middle
    previous = None
    for unit in units:
        expected, previous = nearest_frame_stamps(unit, stream.frame_stamps, previous)
        if unit.frames:
            first_real = next(s for s in expected if s is not None)
            assert unit.frame_stamps_ns == [first_real if s is None else s for s in expected]
            assert [f[0, 0, 0] for f in unit.frames] == [s % 256 for s in unit.frame_stamps_ns]
    # same units whatever the arrival order within max_delay (and a cross-modality skew)
    shuffled, _ = run(shuffled_arrival(stream.messages, order_seed, skew))
    assert same_units(units, shuffled)
    assert assembler.stats["frames_late"] == 0 and assembler.stats["audio_samples_late"] == 0


@settings(max_examples=25, deadline=None)
@given(**stream_params, rate=st.sampled_from([8000, 44100, 48000]), order_seed=st.integers(0, 2**31))
def test_resampled_rates_give_exact_unit_sizes_and_are_order_independent(
    seed, start, seconds, fps, frame_drop, frame_jitter_ms, chunk_ms, chunk_drop,
    audio_jitter_ms, drift_ppm, rate, order_seed,
):
    stream = make_stream(seed, start, seconds, fps, frame_drop, frame_jitter_ms, rate, chunk_ms,
                         chunk_drop, audio_jitter_ms, drift_ppm)
    units, _ = run(stream.messages)
    check_unit_shape(units)
    covered = sum(u.audio_coverage * N for u in units)
    assert abs(covered - stream.kept_audio.size * N / rate) <= 2 * (1 + chunk_drop * 100)
    same_units(units, run(shuffled_arrival(stream.messages, order_seed))[0])


@settings(max_examples=25, deadline=None)
@given(**{**stream_params, "fps": st.sampled_from([5.0, 15.0, 30.0, 60.0])},
       back_s=st.floats(3.0, 100.0), order_seed=st.integers(0, 2**31))
def test_time_jumping_back_starts_a_new_stream(
    seed, start, seconds, fps, frame_drop, frame_jitter_ms, chunk_ms, chunk_drop,
    audio_jitter_ms, drift_ppm, back_s, order_seed,
):
    """A bag loop: stream A, then stream B starting back_s before the last message of each
    input (a jump beyond restart_tolerance as each input sees it). Both streams' units come out
    complete, B starts at index 0 with stream_restart, in any arrival order within max_delay.
    (Both inputs must have messages near the end of A: an input that first appears after the
    jump is indistinguishable from one that joins late with lagging stamps. Back by at least
    restart_tolerance + modality_timeout: a shorter loop may re-enter the old stream's window
    while the jump waits for the slower input.)"""
    first = make_stream(seed, start, seconds, fps, frame_drop, frame_jitter_ms, N, chunk_ms,
                        chunk_drop, audio_jitter_ms, drift_ppm)
    last_video = max((m.stamp for m in first.messages if m.modality == VIDEO), default=start)
    last_audio = max(m.stamp for m in first.messages if m.modality == AUDIO)
    second_start = min(last_video, last_audio) - int(back_s * S)
    second = make_stream(seed + 1, second_start, seconds, fps, frame_drop, frame_jitter_ms, N,
                         chunk_ms, chunk_drop, audio_jitter_ms, drift_ppm, first_value=500_000)
    in_order = first.messages + second.messages
    units, assembler = run(in_order)
    check_unit_shape(units)
    restarts = [i for i, u in enumerate(units) if u.stream_restart]
    assert len(restarts) == 2 and restarts[0] == 0
    assert assembler.stats["stream_restarts"] == 1
    for part, stream in ((units[: restarts[1]], first), (units[restarts[1]:], second)):
        audio = np.concatenate([u.audio for u in part])
        assert np.array_equal(audio[audio != 0], stream.kept_audio)
    arrival = (shuffled_arrival(first.messages, order_seed)
               + shuffled_arrival(second.messages, order_seed + 1))
    same_units(units, run(arrival)[0])


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), drift_ppm=st.sampled_from([-20_000, -5_000, 5_000, 20_000]))
def test_strong_clock_drift_drops_or_gaps_but_never_duplicates(seed, drift_ppm):
    """Microphone clock 0.5-2% off its stamps: gaps and overlaps are resolved by stamps, every
    unit keeps its size, samples stay in order and none is repeated."""
    stream = make_stream(seed, 1_000 * S, 5.0, 30.0, 0.0, 0, N, 20, 0.0, 1, drift_ppm)
    units, assembler = run(stream.messages)
    check_unit_shape(units)
    audio = np.concatenate([u.audio for u in units])
    values = audio[audio != 0]
    assert np.all(np.diff(values) > 0)  # in order, no duplicates
    lost = stream.kept_audio.size - values.size
    assert lost == assembler.stats["audio_samples_overlap"]
    assert (lost > 0) == (drift_ppm < 0) and (assembler.stats["audio_gaps"] > 0) == (drift_ppm > 0)


# --- targeted rules ----------------------------------------------------------------------------
def steady(seconds, start=1_000 * S, fps=30.0, chunk=320, video=True, audio=True, offset=0):
    messages = []
    if video:
        messages += [Message(VIDEO, start + int(i * S / fps), start + int(i * S / fps))
                     for i in range(int(seconds * fps))]
    if audio:
        messages += [Message(AUDIO, start + k * chunk * S // N,
                             np.full(chunk, 0.5, np.float32) + offset) for k in range(int(seconds * N / chunk))]
    return sorted(messages, key=lambda m: m.stamp)


def test_unit_waits_for_both_modalities_to_pass_its_end_plus_max_delay():
    assembler = UnitAssembler(CONFIG, decode=frame_of)
    start = 1_000 * S
    feed(assembler, steady(1.0, start), flush=False)
    assert feed(assembler, [Message(VIDEO, start + S + 190 * MS, 0)], flush=False) == []
    audio = [Message(AUDIO, start + S + k * 20 * MS, np.full(320, 0.1, np.float32)) for k in range(12)]
    assert feed(assembler, audio, flush=False) == []  # video not yet past 1.2 s
    units = feed(assembler, [Message(VIDEO, start + S + 200 * MS, 0)], flush=False)
    assert [u.index for u in units] == [0] and units[0].audio_coverage == 1.0


def test_audio_only_start_emits_after_the_timeout_lead_with_no_frames():
    units, assembler = run(steady(4.0, video=False), flush=False)
    # units whose end + max_delay + modality_timeout the audio has passed
    assert [u.index for u in units] == [0]
    assert units[0].frames == [] and units[0].audio_coverage == 1.0
    assert assembler.stats["units_lagging_modality"] == 1


def test_marking_a_modality_silent_stops_waiting_for_it():
    assembler = UnitAssembler(CONFIG, decode=frame_of)
    assert feed(assembler, steady(3.0, video=False), flush=False) == []
    units = assembler.mark_silent(VIDEO)
    assert [u.index for u in units] == [0, 1]  # audio is final up to 2.8 s
    units = assembler.mark_silent(AUDIO)  # both silent: everything received comes out
    assert [u.index for u in units] == [2] and units[0].audio_coverage == 1.0


def test_video_only_stream_has_silent_audio():
    assembler = UnitAssembler(CONFIG, decode=frame_of)
    feed(assembler, steady(3.0, audio=False), flush=False)
    units = assembler.mark_silent(AUDIO)
    assert [u.index for u in units] == [0, 1]
    assert all(u.audio_coverage == 0 and not u.audio.any() and len(u.frames) == 2 for u in units)


def test_missing_frames_repeat_the_last_one():
    start = 1_000 * S
    messages = steady(4.0, start, fps=1.0, video=True)  # one frame per second: slot 1 is empty
    units, assembler = run(messages)
    assert [u.repeated_frames for u in units] == [1, 1, 1, 1]
    for u in units:
        assert u.frame_stamps_ns[0] == u.frame_stamps_ns[1] == u.start_ns
    assert assembler.stats["frames_repeated"] == 4


def test_stream_starting_mid_unit_fills_the_first_slots_from_the_first_frame():
    start = 1_000 * S + 700 * MS
    units, _ = run(steady(2.0, start))
    first = units[0]
    assert first.start_ns == 1_000 * S and first.stream_restart
    assert first.frame_stamps_ns[0] == first.frame_stamps_ns[1] and first.repeated_frames == 1
    assert first.audio_coverage == pytest.approx(0.3)
    assert not first.audio[: int(0.7 * N)].any() and first.audio[int(0.7 * N):].all()


def test_only_sampled_frames_are_decoded():
    calls = []
    assembler = UnitAssembler(CONFIG, decode=lambda p: calls.append(p) or frame_of(p))
    units = feed(assembler, steady(5.0))
    assert len(units) == 5 and len(calls) == 10  # 150 frames in, 2 per unit decoded


def test_late_and_duplicate_frames_are_counted_not_used():
    start = 1_000 * S
    assembler = UnitAssembler(CONFIG, decode=frame_of)
    assert len(feed(assembler, steady(2.5, start), flush=False)) == 2  # units 0 and 1 are out
    feed(assembler, [Message(VIDEO, start + 1600 * MS, 1)], flush=False)  # unit 1 is out
    assert assembler.stats["frames_late"] == 1
    existing = start + int(68 * S / 30)  # the frame nearest 2.25 s, sent already
    feed(assembler, [Message(VIDEO, existing, 3)], flush=False)
    assert assembler.stats["frames_duplicate"] == 1
    units = assembler.flush()
    assert existing in units[0].frame_stamps_ns or all(f[0, 0, 0] != 3 for f in units[0].frames)


def test_duplicate_and_overlapping_audio_chunks_are_dropped():
    start = 1_000 * S
    chunk = np.arange(1, 321, dtype=np.float32) * 1e-4
    messages = [Message(VIDEO, start + i * S // 10, start + i * S // 10) for i in range(25)]
    messages += [Message(AUDIO, start, chunk), Message(AUDIO, start, chunk),  # exact duplicate
                 Message(AUDIO, start + 5 * MS, chunk + 1e-2)]  # 15 of its 20 ms overlap
    units, assembler = run(sorted(messages, key=lambda m: m.stamp))
    audio = units[0].audio
    assert np.array_equal(audio[:320], chunk)
    assert np.array_equal(audio[320:400], (chunk + 1e-2)[240:])
    assert assembler.stats["audio_chunks_duplicate"] == 1
    assert assembler.stats["audio_samples_overlap"] == 320 + 240


def test_gap_is_zero_filled_and_reported_as_coverage():
    start = 1_000 * S
    messages = [m for m in steady(3.0, start) if not (m.modality == AUDIO and
                                                       start + S <= m.stamp < start + int(1.5 * S))]
    units, assembler = run(messages)
    assert units[1].audio_coverage == pytest.approx(0.5)
    assert not units[1].audio[:8000].any() and units[1].audio[8000:].all()
    assert assembler.stats["audio_gaps"] == 1


def test_single_glitched_stamp_is_dropped_without_restart():
    start = 1_000 * S
    messages = steady(3.0, start)
    messages.insert(40, Message(VIDEO, start - 50 * S, 0))  # one frame with a bogus stamp
    messages.insert(90, Message(AUDIO, start + 60 * S, np.ones(320, np.float32)))  # and a chunk
    units, assembler = run(messages)
    assert [u.index for u in units] == [0, 1, 2]
    assert assembler.stats["stamp_glitches"] == 2 and assembler.stats["stream_restarts"] == 0


def test_forward_jump_beyond_the_limit_starts_a_new_stream():
    start = 1_000 * S
    units, assembler = run(steady(2.0, start) + steady(2.0, start + 60 * S))
    assert [u.index for u in units] == [0, 1, 0, 1]
    assert [u.stream_restart for u in units] == [True, False, True, False]
    assert units[2].start_ns == start + 60 * S


def test_short_pause_is_kept_as_stream_time():
    start = 1_000 * S
    units, _ = run(steady(2.0, start) + steady(2.0, start + 4 * S))
    assert [u.index for u in units] == [0, 1, 2, 3, 4, 5]
    assert [u.audio_coverage for u in units] == [1, 1, 0, 0, 1, 1]


def test_stragglers_of_the_old_stream_are_dropped_after_a_restart():
    """Bag loop where the video wraps first: the audio's last chunks of the old pass arrive
    after the first new frames. Before the microphone has wrapped too, they belong to the old
    stream (the camera's jump is not yet confirmed: the microphone still speaks in the old
    stream); after its first new chunk confirmed the loop, they are stragglers: dropped,
    counted, no second restart."""
    start = 1_000 * S
    for confirmed_before_tail in (False, True):
        old, new = steady(3.0, start), steady(3.0, start)
        old_audio_tail = [m for m in old if m.modality == AUDIO and m.stamp >= start + int(2.9 * S)]
        head = [m for m in old if m not in old_audio_tail]
        new_head = [m for m in new if m.modality == VIDEO][:3]
        if confirmed_before_tail:
            new_head += [m for m in new if m.modality == AUDIO][:1]
        rest = [m for m in new if m not in new_head]
        units, assembler = run(head + new_head + old_audio_tail + rest)
        assert [u.index for u in units] == [0, 1, 2, 0, 1, 2]
        assert assembler.stats["stream_restarts"] == 1
        assert assembler.stats["audio_stale"] == (len(old_audio_tail) if confirmed_before_tail else 0)
        assert (units[2].audio_coverage == 1.0) == (not confirmed_before_tail)
        assert all(u.audio_coverage == 1.0 for u in units[3:])


def test_unstamped_messages_are_rejected():
    assembler = UnitAssembler(CONFIG, decode=frame_of)
    with pytest.raises(DecodeError) as info:
        assembler.add_frame(0, None)
    assert info.value.reason == "unstamped"


def test_decode_errors_repeat_the_previous_frame_and_are_reported():
    errors = []

    def decode(payload):
        if payload % 7 == 0:
            raise DecodeError("corrupt_compressed", "bad jpeg")
        return frame_of(payload)

    start = 1_000 * S
    assembler = UnitAssembler(CONFIG, decode=decode, on_error=errors.append)
    messages = [Message(VIDEO, start + i * S // 4 + 1, (i * 7) if i == 5 else i * 7 + 1) for i in range(16)]
    messages += [m for m in steady(4.0, start) if m.modality == AUDIO]
    units = feed(assembler, sorted(messages, key=lambda m: m.stamp))
    assert len(errors) == 1 and errors[0].reason == "corrupt_compressed"
    assert assembler.stats["frame_decode_errors"] == 1
    assert sum(u.repeated_frames for u in units) == 1


def test_48k_stereo_tone_survives_mixdown_and_resampling():
    """The full audio path: 48 kHz stereo S16 in 20 ms chunks -> 16 kHz units with the tone."""
    rate, chunk, start = 48_000, 960, 1_000 * S
    t = np.arange(4 * rate) / rate
    tone = (0.4 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    stereo = np.stack([tone, tone], axis=1)
    audio_format = AudioFormat(rate, 2, "S16LE")
    messages = [Message(VIDEO, start + i * S // 30, i) for i in range(120)]
    for k in range(4 * rate // chunk):
        mono, _ = pcm_to_mono(stereo[k * chunk:(k + 1) * chunk].tobytes(), audio_format)
        messages.append(Message(AUDIO, start + k * chunk * S // rate, mono, rate))
    units, _ = run(sorted(messages, key=lambda m: m.stamp))
    assert len(units) == 4
    for unit in units[:3]:
        assert unit.audio_coverage == 1.0
        spectrum = np.abs(np.fft.rfft(unit.audio * np.hanning(N)))
        assert np.argmax(spectrum) == 440  # 1 Hz bins
        assert abs(np.abs(unit.audio).max() - 0.4) < 0.01


def test_config_validation():
    with pytest.raises(ValueError, match="restart_tolerance"):
        AssemblerConfig(max_delay=1.0, restart_tolerance=0.5).validate()
    with pytest.raises(ValueError, match="whole number"):
        AssemblerConfig(unit_duration=1.00001).validate()
    with pytest.raises(ValueError):
        AssemblerConfig(frames_per_unit=0).validate()


def test_four_frames_per_half_second_units():
    config = AssemblerConfig(unit_duration=0.5, frames_per_unit=4)
    start = 1_000 * S
    units, _ = run(steady(2.0, start), config)
    assert len(units) == 4
    for unit in units:
        assert unit.audio.size == 8000 and len(unit.frames) == 4
        middles = [unit.start_ns + (2 * i + 1) * S // 16 for i in range(4)]
        assert all(abs(s - m) <= S // 60 for s, m in zip(unit.frame_stamps_ns, middles))


# --- attacks (security review): one bad message must cost that message, not the stream -------
def run_reporting(messages, config=CONFIG):
    errors = []
    assembler = UnitAssembler(config, decode=frame_of, on_error=errors.append)
    units = feed(assembler, messages)
    return units, assembler, [e.reason for e in errors]


def assert_one_whole_stream(units, seconds):
    assert [u.index for u in units] == list(range(seconds))
    assert [u.stream_restart for u in units] == [True] + [False] * (seconds - 1)
    assert all(u.audio_coverage == 1.0 for u in units), [u.audio_coverage for u in units]
    assert all(u.repeated_frames == 0 for u in units), [u.repeated_frames for u in units]


@pytest.mark.parametrize("modality", [VIDEO, AUDIO])
@pytest.mark.parametrize("offset_s", [1.5, 3.0, 4.9, -3.0])
def test_a_lone_early_or_late_stamp_neither_restarts_nor_blinds_the_other_input(modality, offset_s):
    """Once, one frame stamped 1-5 s ahead was accepted, the real frames then looked like a jump
    back, the stream restarted and every audio chunk after it was stale (and the same with
    audio and video swapped)."""
    start = 1_000 * S
    messages = steady(6.0, start)
    at = start + 2 * S
    position = next(i for i, m in enumerate(messages) if m.stamp >= at)
    bogus = int(at + offset_s * S)
    payload = bogus if modality == VIDEO else np.full(320, 0.9, np.float32)
    messages.insert(position, Message(modality, bogus, payload))
    units, assembler, errors = run_reporting(messages)
    assert_one_whole_stream(units, 6)
    assert errors == ["stamp_outlier"] and assembler.stats["stream_restarts"] == 0
    assert all(bogus not in u.frame_stamps_ns for u in units)
    assert all(not np.any(u.audio == np.float32(0.9)) for u in units)


def test_an_input_on_another_clock_never_restarts_the_stream():
    """The camera's stamps 30 s ahead from 2 s on: the audio keeps every unit whole, the frames
    are outliers (units repeat the last good frame), the stream never restarts."""
    start = 1_000 * S
    messages = [Message(m.modality, m.stamp + (30 * S if m.modality == VIDEO and m.stamp >= start + 2 * S else 0),
                        m.payload) for m in steady(6.0, start)]
    units, assembler, errors = run_reporting(messages)  # arriving in true-time order
    assert assembler.stats["stream_restarts"] == 0
    assert all(u.audio_coverage == 1.0 for u in units)
    assert [u.repeated_frames for u in units[2:5]] == [2, 2, 2]  # no real frame: starved
    assert set(errors) == {"stamp_outlier"} and len(errors) == 4 * 30


def test_huge_finite_float_audio_at_48k_never_gives_non_finite_units():
    """float32 chunks of 3e38 at 48 kHz once overflowed the resampler into NaN (np.clip keeps
    NaN): they are clipped on input, every unit is finite, the tone after them is intact."""
    rate, chunk, start = 48_000, 960, 1_000 * S
    tone = (0.4 * np.sin(2 * np.pi * 440 * np.arange(6 * rate) / rate)).astype(np.float32)
    tone[2 * rate:3 * rate] = 3e38  # the second second is the attack
    messages = [Message(VIDEO, start + i * S // 30, i) for i in range(180)]
    messages += [Message(AUDIO, start + k * chunk * S // rate, tone[k * chunk:(k + 1) * chunk], rate)
                 for k in range(6 * rate // chunk)]
    units, _, errors = run_reporting(sorted(messages, key=lambda m: m.stamp))
    assert len(units) == 6 and all(np.isfinite(u.audio).all() for u in units)
    assert errors == ["audio_out_of_range"] * 50
    for unit in units[4:5]:  # after the attack (and the resampler's filter length)
        spectrum = np.abs(np.fft.rfft(unit.audio * np.hanning(N)))
        assert np.argmax(spectrum) == 440 and abs(np.abs(unit.audio).max() - 0.4) < 0.01


def test_non_finite_samples_never_leave_a_unit(monkeypatch):
    """Whatever the resampler returns, a unit's audio is finite: non-finite samples become
    silence and are counted."""
    from roma_ros.core import audio_track

    real = audio_track.StreamResampler.process
    monkeypatch.setattr(audio_track.StreamResampler, "process",
                        lambda self, samples: np.where(np.arange(samples.size) % 2, np.nan, real(self, samples)))
    units, assembler, errors = run_reporting(steady(3.0))
    assert units and all(np.isfinite(u.audio).all() for u in units)
    assert set(errors) == {"nonfinite_audio"} and assembler.stats["audio_samples_nonfinite"] > 0


def test_frozen_audio_stamps_keep_the_reorder_queue_bounded():
    """Every chunk with the same stamp once waited in the reorder queue for a later stamp that
    never came: the queue grew without bound. It holds at most audio_backlog_ns of audio; when
    full, the queued chunks that repeat earlier audio are dropped and counted (so real chunks
    after the flood still get in); stamps that move again restart a stream that works."""
    start = 1_000 * S
    errors = []
    assembler = UnitAssembler(CONFIG, decode=frame_of, on_error=errors.append)
    chunk = np.full(1600, 0.25, np.float32)
    for _ in range(500):  # 50 s of audio, all stamped `start`
        assembler.add_audio(start, chunk, N)
    track = assembler._stream.audio
    assert track._backlog_ns <= CONFIG.audio_backlog_ns and len(track._heap) <= 32
    reasons = [e.reason for e in errors]
    assert set(reasons) == {"audio_backlog"} and 500 // 32 <= len(reasons) <= 500 // 31 + 1
    assert track.stats["audio_chunks_duplicate"] + track.stats["audio_chunks_backlog_dropped"] == 500 - len(track._heap)
    # a real chunk right after the flood is queued, not refused: the flood made room for it
    assert assembler._stream.audio.push(start + S // 10, chunk, N).accepted
    units = feed(assembler, steady(4.0, start + 100 * S))
    fresh = [u for u in units if u.start_ns >= start + 100 * S]
    assert [u.index for u in fresh] == [0, 1, 2, 3] and all(u.audio_coverage == 1.0 for u in fresh)
