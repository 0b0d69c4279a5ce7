"""The bundled sample: `python -m roma_ros.training.sample --out roma_ros/data/sample`.

A 40-second scripted scene from the ROMA-tiny domain (data.py), written as a rosbag2 bag
(sqlite3) of camera + microphone topics with its annotation file (docs/annotations.md):

    0-8 s   empty room (brick wall), quiet          20-25 s  the alarm beeps
    8-16 s  a cat appears                           25-28 s  someone says something else
    16-20 s empty again                             30-34 s  someone calls for help

Topics: /roma/image/compressed (sensor_msgs/CompressedImage, jpeg, 336x168, 4 fps),
/roma/audio (audio_common_msgs/AudioDataStamped, 16 kHz mono S16LE, 20 ms chunks),
/roma/audio_info (AudioInfo, once per second). Stamps (and log times) count from the fixed
epoch 1700000000 s, which is the annotation's `origin`. One alert task (all three conditions in
one instruction: ROMA has one speak head) and two questions with accepted answers.
`--check` replays the bag with roma_ros.eval.runner and the embedded model and prints the metrics.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from roma_ros.core.unit import NS_PER_S as NS
from roma_ros.core.unit import SAMPLE_RATE
from roma_ros.training import data

ORIGIN_S = 1_700_000_000
SECONDS = 40
FPS = 4
SEED = 2024
VISUAL = [None] * 8 + ["cat"] * 8 + [None] * 24
SOUND = ["quiet"] * 20 + ["alarm"] * 5 + ["talk"] * 3 + ["quiet"] * 2 + ["help"] * 4 + ["quiet"] * 6
INSTRUCTION = data.alert_instruction(["cat", "alarm", "help"])
ANNOTATIONS = {
    "version": 1,
    "origin": float(ORIGIN_S),
    "description": "ROMA-tiny sample: empty room, a cat appears, an alarm beeps, someone calls for help",
    "tasks": [{"id": "safety", "instruction": INSTRUCTION, "mode": "alert", "metric": "pa",
               "threshold": 0.5, "window": 2, "cooldown": 0.0,
               "events": [[8.0, 16.0], [20.0, 25.0], [30.0, 34.0]]}],
    "queries": [{"id": "see", "time": 11.5, "text": "What do you see?", "answers": ["cat"]},
                {"id": "hear", "time": 21.5, "text": "What do you hear?", "answers": ["alarm"]}],
}


def render(seed: int = SEED):
    """(frames at FPS: list of RGB arrays, audio float32 at 16 kHz) of the scripted scene."""
    rng = np.random.default_rng(seed)
    images = data.ImageBank()
    sounds = data.SoundBank()
    bg = images.background(rng)
    bg.update(kind=0, tint=np.array([1.0, 0.75, 0.65]))  # a brick wall
    frames, audio = [], []
    scene = sscene = None
    for t in range(SECONDS):
        if t == 0 or VISUAL[t] != VISUAL[t - 1]:
            scene = images.scene(VISUAL[t], rng)
            scene["bg"] = bg
            base = images.render(scene)
        if t == 0 or SOUND[t] != SOUND[t - 1]:
            sscene = sounds.scene(SOUND[t], rng)
        frames += [data.jitter_frame(base, rng) for _ in range(FPS)]
        audio.append(sounds.render(sscene, t, rng))
    return frames, np.concatenate(audio)


def write_sample(out: str | Path, seed: int = SEED) -> Path:
    from roma_ros.eval.annotations import parse_annotations, save_annotations
    from roma_ros.training.scenes import write_bag

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frames, audio = render(seed)
    start = ORIGIN_S * NS
    write_bag(out / "bag", [(start + i * NS // FPS, f) for i, f in enumerate(frames)], audio, start)
    ann = parse_annotations(json.loads(json.dumps(ANNOTATIONS)), "sample")
    save_annotations(ann, out / "annotations.yaml")
    (out / "README.md").write_text(
        "# ROMA-tiny sample\n\n"
        f"A {SECONDS}-second scripted scene (rosbag2, sqlite3) with its annotations, made by\n"
        "`python -m roma_ros.training.sample --out roma_ros/data/sample` (deterministic, seed "
        f"{seed}).\n\n"
        "| time (s) | camera | microphone |\n|---|---|---|\n"
        "| 0-8 | empty room (brick wall) | quiet |\n| 8-16 | a cat appears | quiet |\n"
        "| 16-40 | empty room | alarm 20-25, other speech 25-28, \"help\" 30-34 |\n\n"
        f"Task `safety` (alert, PA, window 2, threshold 0.5): \"{INSTRUCTION}\",\n"
        "events [8, 16], [20, 25], [30, 34]. Questions: 11.5 s \"What do you see?\" (cat),\n"
        "21.5 s \"What do you hear?\" (alarm).\n\n"
        "Replay and score: `roma eval roma_ros/data/sample/bag --annotations "
        "roma_ros/data/sample/annotations.yaml` (or `python -m roma_ros.training.sample --check`).\n")
    return out


def check(out: str | Path, model_path: str = "embedded") -> dict:
    """Replay the sample through eval.runner.run_bag with the default node settings."""
    from roma_ros.core.triggers import TriggerRule
    from roma_ros.engine.config import EngineConfig
    from roma_ros.engine.factory import load_model
    from roma_ros.engine.session import StreamSession
    from roma_ros.eval.annotations import load_annotations
    from roma_ros.eval.metrics import effective_rule, evaluate
    from roma_ros.eval.runner import run_bag
    from roma_ros.pipeline.synchronizer import PARAMETERS, SynchronizerPipeline, synchronizer_settings

    out = Path(out)
    ann = load_annotations(out / "annotations.yaml")
    def sync_p(name):
        return PARAMETERS[name][0]  # the node's default value

    def build_pipeline():
        config, fallback = synchronizer_settings(sync_p)
        return SynchronizerPipeline(config, fallback, format_source=str(sync_p("audio.format_source")))

    session = StreamSession(load_model(EngineConfig(model_path=model_path)))
    rule = TriggerRule(0.5, 2, 0.0)
    result = run_bag(out / "bag", build_pipeline, session, ann, rule)
    metrics = evaluate(result, ann, rules={t.id: effective_rule(t, rule) for t in ann.tasks}, thresholds=None)
    return {"result": result, "metrics": metrics}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="roma_ros/data/sample")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--check", action="store_true", help="only replay the existing sample and print metrics")
    ap.add_argument("--model", default="embedded")
    a = ap.parse_args(argv)
    if not a.check:
        out = write_sample(a.out, a.seed)
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        print(f"wrote {out} ({size / 1e6:.2f} MB)")
        return
    r = check(a.out, a.model)
    m, res = r["metrics"], r["result"]
    print("probabilities:", " ".join(f"{u.prob:.2f}" for u in res.units))
    print("alerts:", [(a.task_id, a.time_s) for a in res.alerts])
    print("answers:", res.answers)
    print(json.dumps(m["overall"], indent=1, default=str))


if __name__ == "__main__":
    main()
