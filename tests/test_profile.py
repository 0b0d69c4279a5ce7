"""Model profiles: resolution, files, the synchronizer and engine agreeing, audio conditioning."""
import json
import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine_fixtures import make_units, tiny_engine
from roma_ros.core.profile import (NEUTRAL_SYSTEM_PROMPT, PROFILE_FILE_NAME, RELEASE, TINY, FrameSizing,
                                   ProfileError, builtin_profile, profile_from_file, resolve_profile)
from roma_ros.core.unit import Unit
from roma_ros.engine.config import EngineConfig
from roma_ros.engine.factory import embedded_model_path
from roma_ros.engine.unit_encoder import zero_runs
from roma_ros.pipeline.synchronizer import PARAMETERS as SYNC_PARAMETERS
from roma_ros.pipeline.synchronizer import synchronizer_settings


def sync_params(**values):
    return lambda name: values.get(name, SYNC_PARAMETERS[name][0])


# ---- resolution -----------------------------------------------------------------------------
def test_auto_picks_the_file_beside_the_checkpoint_then_tiny_then_release_with_a_warning(tmp_path):
    embedded = resolve_profile("auto", str(embedded_model_path()))
    assert embedded.name == TINY and embedded.warnings == []
    assert embedded.prompt.system_prompt.startswith("You are ROMA-tiny")  # its roma_prompt.json
    bare = resolve_profile("auto", str(tmp_path))
    assert bare.name == RELEASE and bare.prompt_source == "default"
    text = " ".join(bare.warnings)
    for choice in (RELEASE, TINY, PROFILE_FILE_NAME, "roma profile import"):
        assert choice in text
    (tmp_path / PROFILE_FILE_NAME).write_text(json.dumps({"name": "mine", "base": TINY,
                                                          "prompt": {"system_prompt": "Watch."}}))
    mine = resolve_profile("auto", str(tmp_path))
    assert (mine.name, mine.frames.rule, mine.prompt.system_prompt, mine.warnings) == ("mine", "grid", "Watch.", [])
    assert mine.prompt_source == str(tmp_path / PROFILE_FILE_NAME)


def test_a_named_builtin_wins_over_the_file_and_the_legacy_prompt_file_overlays(tmp_path):
    (tmp_path / "roma_prompt.json").write_text(json.dumps({"system_prompt": "Legacy prompt."}))
    release = resolve_profile(RELEASE, str(tmp_path))
    assert release.frames.rule == "release" and release.audio.silence == "noise_bed"
    assert release.prompt.system_prompt == "Legacy prompt." and release.warnings == []
    assert release.prompt.instruction_template == "{instruction}"  # the release scaffolding stays
    # a profile file that sets its own system prompt is not overlaid by the legacy file
    (tmp_path / PROFILE_FILE_NAME).write_text(json.dumps({"prompt": {"system_prompt": "Profile prompt."}}))
    assert resolve_profile("auto", str(tmp_path)).prompt.system_prompt == "Profile prompt."


@pytest.mark.parametrize("content, message", [
    ("{not json", "cannot read profile file"),
    ("[1, 2]", "holds a JSON object"),
    ('{"colour": 1}', "unknown keys"),
    ('{"base": "roma-huge"}', "unknown model profile"),
    ('{"frames": {"rule": "stretch"}}', "frames.rule"),
    ('{"audio": {"silence": "pink"}}', "audio.silence"),
    ('{"audio": {"bed_amplitude": 0.5}}', "bed_amplitude"),
    ('{"prompt": {"system": "x"}}', "unknown keys"),
])
def test_bad_profile_files_are_refused_with_the_reason(tmp_path, content, message):
    path = tmp_path / PROFILE_FILE_NAME
    path.write_text(content)
    with pytest.raises(ProfileError, match=message):
        profile_from_file(path)


def test_unknown_spec_names_the_choices(tmp_path):
    with pytest.raises(ProfileError, match="roma-release, roma-tiny"):
        resolve_profile("roma-huge", str(tmp_path))
    with pytest.raises(ValueError):
        EngineConfig(model_path=str(tmp_path), speech_gate="maybe").validate()


def test_neutral_prompt_is_flagged_even_when_named_explicitly(tmp_path):
    profile = resolve_profile(RELEASE, str(tmp_path))
    assert profile.prompt.system_prompt == NEUTRAL_SYSTEM_PROMPT and profile.prompt_source == "default"
    assert any("neutral default" in w for w in profile.warnings)


def test_speech_gate_parameter_overrides_the_profile(tmp_path):
    gate = EngineConfig(model_path=str(tmp_path), model_profile=RELEASE, speech_gate="on").resolve_profile()
    assert gate.audio.speech_gate and "speech gate" in gate.describe()
    assert not EngineConfig(model_path=str(tmp_path), model_profile=RELEASE).resolve_profile().audio.speech_gate


# ---- frames: the synchronizer and the engine agree ------------------------------------------
@pytest.mark.parametrize("spec, rule, size", [("auto", "grid", (168, 336)), (TINY, "grid", (168, 336)),
                                              (RELEASE, "release", (196, 336))])
def test_synchronizer_sizes_frames_by_the_engines_profile(spec, rule, size):
    config, _ = synchronizer_settings(sync_params(model_profile=spec))
    assert config.frame_rule == rule and config.sizing.target_size(360, 640) == size
    engine = EngineConfig(model_path=str(embedded_model_path()), model_profile=spec).resolve_profile()
    assert engine.frames == config.sizing


def test_synchronizer_finds_the_profile_beside_a_checkpoint(tmp_path):
    (tmp_path / PROFILE_FILE_NAME).write_text(json.dumps({"base": RELEASE, "frames": {"max_pixels": 40000}}))
    config, _ = synchronizer_settings(sync_params(model_path=str(tmp_path)))
    assert (config.frame_rule, config.max_pixels) == ("release", 40000)
    config, _ = synchronizer_settings(sync_params(model_path=str(tmp_path), max_pixels=65536))
    assert config.max_pixels == 65536


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 4000), st.integers(1, 4000), st.sampled_from(["release", "grid"]))
def test_every_rule_gives_model_frames_and_is_stable(h, w, rule):
    """Any camera size: sides are multiples of 28; a model frame maps to itself (so the engine
    accepts what the synchronizer produced without a second resize)."""
    sizing = FrameSizing(rule=rule)
    if max(h, w) / min(h, w) > 200:
        with pytest.raises(ValueError):
            sizing.target_size(h, w)
        return
    th, tw = sizing.target_size(h, w)
    assert th % 28 == 0 and tw % 28 == 0 and th >= 28 and tw >= 28
    if rule == "grid":
        assert th * tw <= 65_536 or min(th, tw) == 28  # extreme aspect: the 28-px side wins
        assert sizing.target_size(th, tw) == (th, tw)


def test_release_sizes_of_common_cameras():
    release = FrameSizing(rule="release")
    assert release.steps(360, 640) == [(192, 341), (196, 336)]
    assert release.target_size(480, 640) == (224, 308)
    assert release.target_size(720, 1280) == (196, 336)
    assert release.target_size(12, 12) == (56, 56) and len(release.steps(12, 12)) == 3


# ---- audio conditioning ----------------------------------------------------------------------
@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 400)), min_size=1, max_size=30), st.integers(1, 200))
def test_zero_runs_marks_exactly_the_long_runs(runs, min_run):
    a = np.concatenate([np.zeros(n) if zero else np.full(n, 0.5) for zero, n in runs]).astype(np.float32)
    expect = np.concatenate([np.full(n, zero and n >= min_run) for zero, n in _merged(runs)])
    assert (zero_runs(a, min_run) == expect).all()


def _merged(runs):
    out = []
    for zero, n in runs:
        if out and out[-1][0] == zero:
            out[-1] = (zero, out[-1][1] + n)
        else:
            out.append((zero, n))
    return out


def _unit(index, audio):
    rng = np.random.default_rng(index)
    frame = rng.integers(0, 256, (56, 112, 3), dtype=np.uint8)
    return Unit(index=index, start_ns=index * 10**9, duration_ns=10**9, frames=[frame, frame], audio=audio)


def test_release_profile_lays_the_noise_bed_under_silence_and_gaps():
    eng = tiny_engine(model_profile=RELEASE)
    enc = eng.encoder
    speech = np.sin(np.arange(16000) / 7.0).astype(np.float32) * 0.3
    gap = speech.copy()
    gap[4000:9000] = 0.0  # the synchronizer's zero fill for a dropped chunk
    gap[100:150] = 0.0  # a short run of zeros inside a real signal stays
    out = enc.condition_audio(gap)
    assert (out[100:150] == 0).all() and (out[:100] == speech[:100]).all()
    bed = out[4000:9000]
    assert 0 < np.abs(bed).max() <= 1e-4 and np.unique(bed).size > 4000
    assert (out[9000:] == speech[9000:]).all()
    silent = enc.condition_audio(np.zeros(16000, np.float32))
    assert np.abs(silent).max() <= 1e-4 and (silent != 0).mean() > 0.99
    assert enc.mel(silent).mean() == pytest.approx(-1.0, abs=0.1)
    # roma-tiny keeps zeros (what it was trained on): log-mel of digital silence
    tiny = tiny_engine(model_profile=TINY).encoder
    assert (tiny.condition_audio(np.zeros(16000, np.float32)) == 0).all()
    assert tiny.mel(np.zeros(16000, np.float32)).mean() == pytest.approx(-1.5, abs=0.1)


def test_the_bed_repeats_per_stream_and_differs_per_unit():
    eng = tiny_engine(model_profile=RELEASE)
    zeros = np.zeros(16000, np.float32)
    first = [eng.encoder.condition_audio(zeros).copy() for _ in range(2)]
    assert not np.array_equal(first[0], first[1])
    eng.reset()
    again = [eng.encoder.condition_audio(zeros).copy() for _ in range(2)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))


def test_non_finite_audio_is_replaced_and_reported():
    eng = tiny_engine(model_profile=RELEASE)
    audio = np.full(16000, 0.1, np.float32)
    audio[10:20] = np.nan
    audio[30] = np.inf
    result = eng.ingest(_unit(0, audio))
    assert [r for r, _ in result.input_notes] == ["nonfinite_audio"]
    assert "11 non-finite" in result.input_notes[0][1]
    assert np.isfinite(result.prob)
    assert eng.ingest(_unit(1, np.full(16000, 0.1, np.float32))).input_notes == []


def test_engine_logs_the_active_profile(caplog):
    with caplog.at_level(logging.INFO, logger="roma_ros.engine.roma"):
        eng = tiny_engine(model_profile=RELEASE, prompt_file="")
    text = caplog.text
    assert "model profile roma-release" in text and "frames release" in text
    assert eng.model_profile.name == RELEASE
    # a frame that already is a model frame of the rule passes without a note
    assert eng.ingest(make_units(1, seed=0)[0]).input_notes == []
