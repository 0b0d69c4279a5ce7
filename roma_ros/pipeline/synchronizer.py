"""The synchronizer's pipeline without rclpy: its parameter table, message -> core types ->
assembler -> unit messages, starvation tracking. The node (roma_ros.nodes.synchronizer_node),
the offline evaluator, the benchmarks and the sample builder drive this same code."""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import replace
from typing import Callable

from roma_ros.core.assembler import AUDIO, MODALITIES, VIDEO, AssemblerConfig, UnitAssembler
from roma_ros.core.audio_decode import AudioFormat, pcm_to_mono
from roma_ros.core.errors import DecodeError
from roma_ros.core.image_decode import check_compressed, check_raw
from roma_ros.core.log_text import loggable
from roma_ros.core.profile import FrameSizing, resolve_profile
from roma_ros.core.unit import Unit
from roma_ros.msg import MultimodalUnit
from roma_ros.params import qos_parameters
from roma_ros.pipeline.convert import (
    audio_format_from_info,
    compressed_image_from_msg,
    raw_image_from_msg,
    stamp_to_ns,
    unit_to_msg,
)

FORMAT_SOURCES = ("auto", "info", "parameters")
TEXT_LIMIT = 256  # characters of an outside string kept (frame_id, encoding, format)
STARVED_UNITS = 3  # units in a row without an input whose messages arrived meanwhile: WARN
STARVED_ERROR_UNITS = 10  # ... and this many: ERROR

# name -> (default, description); nested names use dots ("topics.image" is topics: image: in YAML)
PARAMETERS: dict[str, tuple[object, str]] = {
    "unit_duration": (1.0, "seconds of stream time per unit"),
    "frames_per_unit": (2, "frames sampled per unit"),
    "model_profile": ("auto", "the engine's model profile (frame sizing rule): auto | roma-release | roma-tiny | file"),
    "model_path": ("embedded", "the engine's checkpoint (auto finds its roma_profile.json there)"),
    "max_pixels": (0, "frame area limit of the profile's rule; 0 = the profile's own (65,536)"),
    "max_delay": (0.2, "seconds a message may arrive after a later-stamped one of its modality"),
    "modality_timeout": (2.0, "seconds (node clock) without messages before a modality is silent"),
    "restart_tolerance": (1.0, "backward stamp jump (s) that starts a new stream"),
    "max_forward_jump": (5.0, "forward stamp jump (s) that starts a new stream"),
    "jump_confirm_count": (3, "agreeing messages that confirm a stamp jump; fewer are outliers"),
    "audio_jitter_tolerance": (0.03, "stamp jitter (s) still treated as contiguous audio"),
    "compressed": (False, "subscribe to CompressedImage instead of Image"),
    "topics.image": ("image", "sensor_msgs/Image input"),
    "topics.compressed_image": ("image/compressed", "sensor_msgs/CompressedImage input"),
    "topics.audio": ("audio", "audio_common_msgs/AudioDataStamped input"),
    "topics.audio_info": ("audio_info", "audio_common_msgs/AudioInfo input"),
    "topics.units": ("units", "roma_ros/MultimodalUnit output"),
    "audio.format_source": ("auto", "auto | info | parameters"),
    "audio.sample_rate": (16000, "Hz, raw PCM without AudioInfo"),
    "audio.channels": (1, "interleaved channels, raw PCM without AudioInfo"),
    "audio.sample_format": ("S16LE", "raw PCM sample format without AudioInfo"),
    "audio.coding_format": ("wave", "coding without AudioInfo (only raw PCM works)"),
    **qos_parameters("qos.image", "best_effort", "volatile", 5),
    **qos_parameters("qos.audio", "best_effort", "volatile", 50),
    **qos_parameters("qos.audio_info", "best_effort", "volatile", 1),
    **qos_parameters("qos.units", "reliable", "volatile", 10),
    "diagnostics_period": (1.0, "seconds between /diagnostics messages"),
}



class SynchronizerPipeline:
    """Everything the node does with a message, without rclpy's node machinery (so benchmarks
    and offline tools drive the very same code): message -> core types -> assembler -> unit
    messages. Bad input raises nothing: it is counted in `counters` as errors.<reason> and
    passed to `on_error(reason, text)` (the node logs it there, rate-limited)."""

    def __init__(
        self,
        config: AssemblerConfig,
        fallback_format: AudioFormat,
        format_source: str = "auto",
        on_error: Callable[[str, str], None] | None = None,
        info_publisher_exists: Callable[[], bool] = lambda: False,
        counters: Counter | None = None,
        on_warning: Callable[[str], None] | None = None,
    ):
        if format_source not in FORMAT_SOURCES:
            raise ValueError(f"audio.format_source must be one of {FORMAT_SOURCES}")
        self.counters: Counter = Counter() if counters is None else counters
        self._on_error = on_error or (lambda reason, text: None)
        self.assembler = UnitAssembler(config, on_error=self._decode_error)
        self.starvation = Starvation()
        self.fallback_format = fallback_format
        self.format_source = format_source
        self.info_format: AudioFormat | None = None
        self._info_publisher_exists = info_publisher_exists
        self.last_unit: Unit | None = None
        self._bad_info_seen = False
        self._on_warning = on_warning or (lambda text: None)
        self._assumed_format_told = False
        # Chunks received before the first valid AudioInfo (~5 s of 20 ms chunks; oldest dropped
        # and counted beyond that).
        self._waiting_chunks: deque = deque(maxlen=250)

    def _decode_error(self, error: DecodeError) -> None:
        self.error(error.reason, str(error))

    def error(self, reason: str, text: str) -> None:
        self.counters["errors." + reason] += 1
        self._on_error(reason, text)

    def _to_msgs(self, units: list[Unit]) -> list[MultimodalUnit]:
        if units:
            self.last_unit = units[-1]
            self.counters["units_out"] += len(units)
        for unit in units:
            self.starvation.unit(unit)
        return [unit_to_msg(unit) for unit in units]

    # --- inputs ----------------------------------------------------------------------------
    def image(self, msg) -> list[MultimodalUnit]:
        return self._frame(msg, raw_image_from_msg, check_raw, ("encoding", msg.encoding))

    def compressed_image(self, msg) -> list[MultimodalUnit]:
        return self._frame(msg, compressed_image_from_msg, check_compressed, ("format", msg.format))

    def _frame(self, msg, to_payload, check, named_text) -> list[MultimodalUnit]:
        """Validate the frame's strings, header and size cheaply and hand a reference to the
        assembler; pixels are decoded only if a unit selects the frame."""
        self.counters["images_in"] += 1
        self.starvation.message(VIDEO)
        try:
            for what, text in (("frame_id", msg.header.frame_id), named_text):
                _check_text(text, what)
            payload = to_payload(msg)
            check(payload)
            units = self.assembler.add_frame(stamp_to_ns(msg.header.stamp), payload, msg.header.frame_id)
        except DecodeError as exc:
            self.error(exc.reason, str(exc))
            return []
        return self._to_msgs(units)

    def audio_info(self, msg) -> list[MultimodalUnit]:
        """A valid AudioInfo sets the format; an invalid one (compressed coding, unknown sample
        format, absurd rate or channel count) is counted and ignored: the last valid format stays,
        and before any valid one, chunks wait rather than being misread as raw PCM. Chunks that
        waited are decoded once the format is known (AudioInfo and audio are separate topics, so
        the first chunks often arrive before the first AudioInfo)."""
        self.counters["audio_info_in"] += 1
        audio_format = audio_format_from_info(msg)
        try:
            audio_format.validate()
        except DecodeError as exc:
            self._bad_info_seen = True
            self.error(exc.reason, f"AudioInfo ignored: {exc}")
            return []
        self.info_format = audio_format
        units = []
        while self._waiting_chunks:
            units += self._decode_audio(self._waiting_chunks.popleft())
        return units

    def audio_format(self) -> AudioFormat | None:
        """The format to read audio chunks with, or None to drop them (waiting for AudioInfo)."""
        if self.format_source == "parameters":
            return self.fallback_format
        if self.info_format is not None:
            return self.info_format
        if self.format_source == "info" or self._bad_info_seen or self._info_publisher_exists():
            return None
        if not self._assumed_format_told:  # without AudioInfo a 48 kHz stereo mic would be misread
            self._assumed_format_told = True
            self.counters["audio_format_assumed"] += 1
            fmt = self.fallback_format
            self._on_warning(
                f"no AudioInfo on the audio_info topic: reading audio as {fmt.sample_format}, {fmt.sample_rate} Hz, "
                f"{fmt.channels} channel(s). If the microphone differs, publish or remap its AudioInfo "
                "(audio_info:=...) or set audio.sample_rate, audio.channels and audio.sample_format "
                "(with audio.format_source: parameters)")
        return self.fallback_format

    def audio(self, msg) -> list[MultimodalUnit]:
        self.counters["audio_chunks_in"] += 1
        self.starvation.message(AUDIO)
        return self._decode_audio(msg)

    def _decode_audio(self, msg) -> list[MultimodalUnit]:
        audio_format = self.audio_format()
        if audio_format is None:
            if len(self._waiting_chunks) == self._waiting_chunks.maxlen:
                self.counters["audio_chunks_dropped_waiting_for_info"] += 1
            self._waiting_chunks.append(msg)
            self.counters["audio_chunks_waiting_for_info"] += 1
            return []
        try:
            samples, nonfinite = pcm_to_mono(msg.audio.data, audio_format)
            if nonfinite:
                self.counters["audio_nonfinite_samples"] += nonfinite
                self.error("nonfinite_audio", f"{nonfinite} non-finite audio samples replaced by silence")
            units = self.assembler.add_audio(stamp_to_ns(msg.header.stamp), samples, audio_format.sample_rate)
        except DecodeError as exc:
            self.error(exc.reason, str(exc))
            return []
        return self._to_msgs(units)

    def mark_silent(self, modality: str) -> list[MultimodalUnit]:
        units = self.assembler.mark_silent(modality)
        if set(MODALITIES) <= self.assembler.silent:  # both inputs ended: what comes out is the end
            kept = [u for u in units if not is_tail_fragment(u)]
            if len(kept) < len(units):
                self.counters["tail_fragments_dropped"] += len(units) - len(kept)
            units = kept
        return self._to_msgs(units)


TAIL_MIN_COVERAGE = 0.5


def is_tail_fragment(unit: Unit) -> bool:
    """A unit let out only by the end of the stream that holds no new frame and under half a
    second of audio: encoder padding (AAC adds ~1,024 samples after the end) or a cut, not a
    scene. It is dropped (counted as tail_fragments_dropped): a unit of 1 % audio would be scored
    like a real second, live and offline alike."""
    new_frames = len(unit.frames) - unit.repeated_frames  # the synchronizer repeats the last frame
    return new_frames <= 0 and unit.audio_coverage < TAIL_MIN_COVERAGE



def _check_text(text: str, what: str) -> None:
    if len(text) > TEXT_LIMIT:
        raise DecodeError("text_too_long", f"{what} of {len(text)} characters (limit {TEXT_LIMIT}): "
                                           f"'{loggable(text, 40)}'")


class Starvation:
    """Inputs whose messages keep arriving while the units carry none of them: stamps that the
    timeline rejects (another clock, a frozen or forged stamp), or messages always too late.
    No counter of rejected messages says this on its own, so the status names the input.

    Per input, `units[m]` counts the units in a row that lacked m (no real frame / no real audio)
    although messages of m arrived since the unit before; a unit with m, or one before which no
    m arrived (a silent or slow input), starts the count again."""

    def __init__(self):
        self.arrived = {m: 0 for m in MODALITIES}
        self.units = {m: 0 for m in MODALITIES}

    def message(self, modality: str) -> None:
        self.arrived[modality] += 1

    def unit(self, unit: Unit) -> None:
        present = {VIDEO: unit.repeated_frames < len(unit.frames), AUDIO: unit.audio_coverage > 0}
        for modality, has in present.items():
            starving = not has and self.arrived[modality] > 0
            self.units[modality] = self.units[modality] + 1 if starving else 0
            self.arrived[modality] = 0

    def starved(self) -> dict[str, int]:
        """Starved inputs -> units in a row without them."""
        return {m: n for m, n in self.units.items() if n >= STARVED_UNITS}


def frame_sizing(p: Callable[[str], object]) -> FrameSizing:
    """The frame rule of the model profile the engine will use (same parameters, same answer)."""
    from roma_ros.engine.factory import EMBEDDED, embedded_model_path

    model_path = str(p("model_path"))
    embedded = model_path in ("", EMBEDDED)
    path = str(embedded_model_path()) if embedded else model_path
    sizing = resolve_profile(str(p("model_profile")), path, embedded=embedded).frames
    if int(p("max_pixels")) > 0:
        sizing = replace(sizing, max_pixels=int(p("max_pixels")))
    return sizing.validate()


def synchronizer_settings(p: Callable[[str], object], sizing: FrameSizing | None = None
                          ) -> tuple[AssemblerConfig, AudioFormat]:
    """Assembler settings and the raw-PCM audio format from parameter values (`p(name)`):
    the node and the offline evaluator build the very same pipeline from one YAML file.
    `sizing`: the engine's frame rule when the caller already holds its profile."""
    sizing = sizing or frame_sizing(p)
    config = AssemblerConfig(
        unit_duration=float(p("unit_duration")),
        frames_per_unit=int(p("frames_per_unit")),
        max_pixels=sizing.max_pixels,
        frame_rule=sizing.rule,
        max_delay=float(p("max_delay")),
        modality_timeout=float(p("modality_timeout")),
        restart_tolerance=float(p("restart_tolerance")),
        max_forward_jump=float(p("max_forward_jump")),
        jump_confirm_count=int(p("jump_confirm_count")),
        audio_jitter_tolerance=float(p("audio_jitter_tolerance")),
    )
    fallback = AudioFormat(
        sample_rate=int(p("audio.sample_rate")),
        channels=int(p("audio.channels")),
        sample_format=str(p("audio.sample_format")),
        coding_format=str(p("audio.coding_format")),
    )
    return config, fallback

