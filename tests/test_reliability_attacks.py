"""The attack campaign (tests/attacks.py) against the live graph: every attack is counted, none
blinds, deafens or poisons the stream, no log line can be forged, memory stays bounded."""
from __future__ import annotations

import pytest

from attacks import ATTACKS, forged_log_lines, run_campaign
from engine_fixtures import tiny_head, tiny_thinker, write_checkpoint
from rosutil import ros_context


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    checkpoint = write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", tiny_thinker(0), tiny_head(1))
    with ros_context() as (context, executor):
        return run_campaign(str(checkpoint), executor, context)


def test_the_nodes_survive_the_campaign(report):
    assert report["alive"] == {"synchronizer": True, "engine": True}
    for name, log in report["logs"].items():
        assert "Traceback" not in log, (name, log[-3000:])


@pytest.mark.parametrize("attack", [a.name for a in ATTACKS])
def test_each_attack_is_counted_and_the_stream_stays_whole(report, attack):
    outcome = next(o for o in report["attacks"] if o["attack"] == attack)
    assert outcome["counted_as_expected"], outcome
    assert outcome["units_after"] >= 3, outcome
    assert outcome["min_audio_coverage_after"] >= 0.9, outcome  # not deafened
    assert outcome["max_repeated_frames_after"] <= 1, outcome  # not blinded
    assert outcome["stream_restarts_after"] == 0, outcome
    assert outcome["finite_scores_after"] and outcome["scored_after"] >= 2, outcome


def test_no_log_line_is_forged_and_logs_stay_small(report):
    for name, log in report["logs"].items():
        assert forged_log_lines(log) == [], name
        assert len(log) < 200_000, (name, len(log))  # 2 MB ids are not echoed per message


def test_memory_stays_bounded(report):
    for name, rss in report["rss_mib"].items():
        assert rss["end"] - rss["start"] < 150, (name, rss)
