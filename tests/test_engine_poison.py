"""Nothing non-finite reaches the model's context, and a poisoned context cannot outlive one unit.

The attack that motivated this: float32 samples of ~3e38 (finite) overflowed the mel power
spectrum, NaN spread through the KV cache and every later unit had a NaN speak probability."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine_fixtures import make_units, tiny_engine
from roma_ros.engine.interface import UnitRefused
from roma_ros.engine.session import StreamSession


@pytest.fixture
def engine():
    return tiny_engine(max_context_tokens=4096)


def test_huge_finite_audio_is_clipped_reported_and_gives_a_finite_probability(engine):
    units = make_units(3, seed=1)
    units[1].audio = np.full(16000, 3e38, np.float32)
    probs, notes = [], []
    for unit in units:
        result = engine.ingest(unit)
        probs.append(result.prob)
        notes.append(dict(result.input_notes))
    assert all(math.isfinite(p) for p in probs)
    assert "audio_out_of_range" in notes[1] and "16000" in notes[1]["audio_out_of_range"]
    assert "audio_out_of_range" not in notes[0] and "audio_out_of_range" not in notes[2]
    assert engine.cache.is_finite()


def test_full_scale_audio_is_not_reported(engine):
    unit = make_units(1)[0]
    unit.audio = np.clip(unit.audio * 20, -1.05, 1.05).astype(np.float32)  # resampler ringing
    assert "audio_out_of_range" not in dict(engine.ingest(unit).input_notes)


def test_non_finite_features_are_refused_before_they_touch_the_context(engine, monkeypatch):
    units = make_units(3, seed=2)
    engine.ingest(units[0])
    used = engine.cache.used
    real_encode = engine.encoder.encode

    def poisoned(unit):
        encoded = real_encode(unit)
        encoded.embeds[0, 0, 0] = float("nan")
        return encoded

    monkeypatch.setattr(engine.encoder, "encode", poisoned)
    with pytest.raises(UnitRefused) as refused:
        engine.ingest(units[1])
    assert refused.value.reason == "nonfinite_features" and not refused.value.restarted
    assert engine.cache.used == used
    monkeypatch.setattr(engine.encoder, "encode", real_encode)
    assert math.isfinite(engine.ingest(units[2]).prob)


def test_a_unit_with_a_non_finite_probability_is_taken_out_again(engine, monkeypatch):
    units = make_units(3, seed=3)
    engine.ingest(units[0])
    used = engine.cache.used
    real = engine.runtime.speak_prob
    monkeypatch.setattr(engine.runtime, "speak_prob", lambda states: torch.tensor([float("nan")]))
    with pytest.raises(UnitRefused) as refused:
        engine.ingest(units[1])
    assert refused.value.reason == "nonfinite_state" and not refused.value.restarted
    assert engine.cache.used == used and engine.cache.is_finite()
    monkeypatch.setattr(engine.runtime, "speak_prob", real)
    assert math.isfinite(engine.ingest(units[2]).prob)


def test_a_context_holding_non_finite_state_is_restarted_within_one_unit(engine):
    session = StreamSession(engine)
    session.set_task("fall", "alert me when someone falls")
    units = make_units(4, seed=4)
    session.process(units[0])
    held = np.flatnonzero(~engine.cache.free_mask)
    engine.cache.k[:, :, :, int(held[-1])] = float("nan")  # poison a unit's keys in place
    assert not engine.cache.is_finite()
    with pytest.raises(UnitRefused) as refused:
        session.process(units[1])
    assert refused.value.reason == "nonfinite_state" and refused.value.restarted
    assert engine.cache.is_finite()
    assert math.isfinite(session.process(units[2]).probability)
    assert session.tasks.get("fall") is not None  # standing tasks survive the restart
    assert len(engine._instruction_groups) == 1  # ... and are back in the context
    assert math.isfinite(session.process(units[3]).probability)
