"""Per-unit speak-head inputs of annotated bags, extracted by the evaluator's replay and cached.

The speak head sees only the K layer states at each unit's anchor token (`<|vision_eos|>`), and
those depend on the standing instruction. So a bag is replayed once per annotated task, with that
task's instruction alone (set at its `ask_time`, as `roma eval` does) and no questions, through
`roma_ros.eval.runner.run_bag`: the synchronizer and engine code of the nodes. What the head
receives there is what it receives live. Each unit's states, span and the base head's probability
are stored in one `.npz` per (bag, task) under a key made of everything that changes them: the
checkpoint's fingerprint, the model profile, the bag's bytes (sampled), the task's instruction and
ask time, the synchronizer's and engine's parameters and the roma_ros version.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from roma_ros import __version__
from roma_ros.core.triggers import TriggerRule
from roma_ros.eval.annotations import Annotations, Task
from roma_ros.eval.metrics import effective_rule

FEATURE_FORMAT = 1
BAG_SAMPLE_BYTES = 1 << 20


@dataclass
class TaskFeatures:
    """One task's units of one bag: what the head saw and what the annotation says."""

    bag: str
    task: Task
    rule: TriggerRule
    states: np.ndarray  # (N, K, H) float32: the head's input at each unit's anchor
    starts: np.ndarray  # (N,) seconds since the annotation's origin
    ends: np.ndarray
    indices: np.ndarray  # (N,) unit indices
    restarts: np.ndarray  # (N,) bool: first unit of a new stream
    base_probs: np.ndarray  # (N,) the checkpoint's head, as the engine computed it

    @property
    def scored(self) -> np.ndarray:
        """Units after the task was set (before it, the instruction was not in the context)."""
        return self.ends > self.task.ask_time

    def labels(self) -> np.ndarray:
        """1 where the unit's middle lies in an annotated event (a point event: within its
        tolerance), else 0."""
        mid = (self.starts + self.ends) / 2
        y = np.zeros(len(mid), np.float32)
        tol = self.task.effective_tolerance if self.task.metric == "po" else 0.0
        for e in self.task.events:
            y[(mid >= e.start - tol) & (mid <= e.end + tol)] = 1.0
        return y

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".partial.npz")
        np.savez(tmp, states=self.states, starts=self.starts, ends=self.ends, indices=self.indices,
                 restarts=self.restarts, base_probs=self.base_probs)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, bag: str, task: Task, rule: TriggerRule) -> "TaskFeatures":
        with np.load(path) as z:
            return cls(bag, task, rule, z["states"], z["starts"], z["ends"], z["indices"], z["restarts"],
                       z["base_probs"])


def bag_fingerprint(bag: Path) -> str:
    """sha256 over the bag's metadata.yaml and each storage file's name, size and first and last MiB."""
    h = hashlib.sha256(b"roma_ros bag fingerprint v1\n")
    bag = Path(bag)
    files = sorted(p for p in bag.iterdir() if p.is_file()) if bag.is_dir() else [bag]
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.name}:{size}\n".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(BAG_SAMPLE_BYTES))
            if size > BAG_SAMPLE_BYTES:
                fh.seek(max(BAG_SAMPLE_BYTES, size - BAG_SAMPLE_BYTES))
                h.update(fh.read())
    return h.hexdigest()


def single_task(task: Task, origin: float | None) -> Annotations:
    return Annotations(tasks=[task], queries=[], origin=origin)


class FeatureExtractor:
    """Replays bags with one model (loaded once) and caches each (bag, task)'s unit features."""

    def __init__(self, engine_p, sync_p, cache_dir: Path, topics=None, parameters_digest: str = ""):
        from roma_ros.engine.head_overlay import checkpoint_fingerprint
        from roma_ros.eval.evaluate_bags import pipeline_factory
        from roma_ros.pipeline.engine import build_session

        self.engine_p = engine_p
        # no default task: each pass stands one annotated task alone
        self._no_default = lambda name: "" if name == "default_task.id" else engine_p(name)
        self.session = build_session(self._no_default)
        self.model = self.session.model
        if getattr(self.model, "anchor_states", "missing") == "missing":
            raise ValueError("roma tune needs the ROMA engine (its speak-head inputs); this model has none")
        self.build_pipeline = pipeline_factory(sync_p, self.session)
        self.cache_dir = Path(cache_dir)
        self.topics = topics
        self.fingerprint = checkpoint_fingerprint(self.model.config.model_path)
        self.parameters_digest = parameters_digest
        self.default_rule = TriggerRule(float(engine_p("default_task.threshold")),
                                        int(engine_p("default_task.window")),
                                        float(engine_p("default_task.cooldown")))

    def key(self, bag: Path, task: Task, origin: float | None) -> str:
        profile = self.model.model_profile
        parts = {"format": FEATURE_FORMAT, "roma_ros": __version__, "checkpoint": self.fingerprint,
                 "profile": profile.describe(), "speech_gate": str(self.engine_p("speech_gate")),
                 "bag": bag_fingerprint(bag), "instruction": task.instruction, "ask_time": task.ask_time,
                 "origin": origin, "parameters": self.parameters_digest,
                 "topics": None if self.topics is None else [self.topics.image, self.topics.audio,
                                                               self.topics.audio_info]}
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]

    def extract(self, bag: Path, task: Task, origin: float | None = None, progress=None) -> tuple[TaskFeatures, bool]:
        """(features, taken from the cache)."""
        from roma_ros.eval.runner import RunOptions, TopicChoice, run_bag
        from roma_ros.pipeline.engine import build_session

        rule = effective_rule(task, self.default_rule)
        path = self.cache_dir / f"{self.key(bag, task, origin)}.npz"
        if path.is_file():
            return TaskFeatures.load(path, str(bag), task, rule), True
        model = self.model
        model.set_instructions([])
        model.reset()
        session = build_session(self._no_default, model=model)
        states, probs = [], []

        def on_unit(unit, step):
            states.append(model.anchor_states.detach().float().cpu().numpy()[:, 0, :].copy())
            probs.append(step.probability)
        result = run_bag(Path(bag), self.build_pipeline, session, single_task(task, origin), self.default_rule,
                         RunOptions(topics=self.topics or TopicChoice(), on_unit=on_unit), progress)
        assert len(states) == len(result.units)  # on_unit sees exactly the units recorded
        if not result.units:
            raise ValueError(f"{bag}: no units came out of the replay (no camera or microphone data)")
        feats = TaskFeatures(
            str(bag), task, rule, np.stack(states).astype(np.float32),
            np.array([u.start_s for u in result.units]), np.array([u.end_s for u in result.units]),
            np.array([u.index for u in result.units], np.int64), np.array([u.restart for u in result.units]),
            np.array(probs, np.float64))
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        feats.save(path)
        return feats, False
