"""What one replayed bag produced: per-unit probabilities, alerts, replies and answers.

Plain dataclasses, JSON-serializable with `to_dict` / `from_dict` (the runner writes them, the
metrics and the report read them, and a saved `result.json` can be re-scored without the model).
All times are seconds since the stream origin (see docs/annotations.md, "Time base").
A probability that was never computed (e.g. a dropped unit) is NaN in memory and null in JSON.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _prob_out(p: float) -> float | None:
    return None if p is None or (isinstance(p, float) and math.isnan(p)) else float(p)


def _prob_in(p: Any) -> float:
    return math.nan if p is None else float(p)


@dataclass
class UnitRecord:
    """One 1-second multimodal unit: its span and the speak probability the model gave it."""

    index: int
    start_s: float
    end_s: float
    prob: float
    fired_task_ids: list[str] = field(default_factory=list)
    restart: bool = False  # first unit of a new stream (the decision rule resets its run here)
    task_probs: dict[str, float] = field(default_factory=dict)  # task id -> its own (tuned) head's p

    def prob_for(self, task_id: str) -> float:
        """The probability the task's decision rule saw: its own head's, else the unit's."""
        return self.task_probs.get(task_id, self.prob)

    def to_dict(self) -> dict[str, Any]:
        out = {"index": self.index, "start_s": self.start_s, "end_s": self.end_s, "prob": _prob_out(self.prob),
               "fired_task_ids": list(self.fired_task_ids)}
        if self.restart:
            out["restart"] = True
        if self.task_probs:
            out["task_probs"] = {k: _prob_out(v) for k, v in self.task_probs.items()}
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UnitRecord":
        return cls(index=int(d["index"]), start_s=float(d["start_s"]), end_s=float(d["end_s"]),
                   prob=_prob_in(d.get("prob")), fired_task_ids=[str(t) for t in d.get("fired_task_ids", [])],
                   restart=bool(d.get("restart", False)),
                   task_probs={str(k): _prob_in(v) for k, v in (d.get("task_probs") or {}).items()})


@dataclass
class AlertRecord:
    """A trigger of a standing task (proactive alert or narration). time_s = end of the window."""

    task_id: str
    time_s: float
    unit_index: int
    probability: float
    window_start_s: float
    text: str = ""
    mode: str = "alert"

    def to_dict(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "time_s": self.time_s, "unit_index": self.unit_index,
                "probability": _prob_out(self.probability), "window_start_s": self.window_start_s,
                "text": self.text, "mode": self.mode}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AlertRecord":
        return cls(task_id=str(d["task_id"]), time_s=float(d["time_s"]), unit_index=int(d["unit_index"]),
                   probability=_prob_in(d.get("probability")), window_start_s=float(d["window_start_s"]),
                   text=str(d.get("text", "")), mode=str(d.get("mode", "alert")))


@dataclass
class ReplyRecord:
    """One streamed chunk of a reply. time_s = end of the unit after which it was generated."""

    query_id: str
    time_s: float
    text: str
    final: bool
    unit_index: int

    def to_dict(self) -> dict[str, Any]:
        return {"query_id": self.query_id, "time_s": self.time_s, "text": self.text, "final": self.final,
                "unit_index": self.unit_index}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ReplyRecord":
        return cls(query_id=str(d["query_id"]), time_s=float(d["time_s"]), text=str(d.get("text", "")),
                   final=bool(d.get("final", False)), unit_index=int(d["unit_index"]))


@dataclass
class BagResult:
    """Everything the runner recorded for one bag.

    `answers` maps query id -> the whole answer text (the concatenated reply chunks).
    `duration_s` is the stream time covered (for rates such as false alarms per hour);
    `wall_s` the wall-clock seconds the replay took. `origin` is the absolute sensor time (s) of
    t = 0, `meta` free-form run information (model, config, ...), both optional.
    """

    name: str
    units: list[UnitRecord] = field(default_factory=list)
    alerts: list[AlertRecord] = field(default_factory=list)
    replies: list[ReplyRecord] = field(default_factory=list)
    answers: dict[str, str] = field(default_factory=dict)
    duration_s: float = 0.0
    wall_s: float = 0.0
    origin: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def stream_duration_s(self) -> float:
        """duration_s, or the span of the units when duration_s was not set."""
        if self.duration_s > 0:
            return self.duration_s
        if self.units:
            return max(u.end_s for u in self.units) - min(0.0, min(u.start_s for u in self.units))
        return 0.0

    def alerts_for(self, task_id: str) -> list[AlertRecord]:
        """This task's alerts in time order."""
        return sorted((a for a in self.alerts if a.task_id == task_id), key=lambda a: a.time_s)

    def replies_for(self, query_id: str) -> list[ReplyRecord]:
        """This query's reply chunks in time order."""
        return sorted((r for r in self.replies if r.query_id == query_id), key=lambda r: r.time_s)

    def answer(self, query_id: str) -> str | None:
        """The whole answer to a query: `answers[query_id]`, else its concatenated chunks, else None."""
        if query_id in self.answers:
            return self.answers[query_id]
        chunks = self.replies_for(query_id)
        return "".join(r.text for r in chunks) if chunks else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "duration_s": self.duration_s,
            "wall_s": self.wall_s,
            "origin": self.origin,
            "meta": self.meta,
            "units": [u.to_dict() for u in self.units],
            "alerts": [a.to_dict() for a in self.alerts],
            "replies": [r.to_dict() for r in self.replies],
            "answers": dict(self.answers),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BagResult":
        return cls(
            name=str(d["name"]),
            units=[UnitRecord.from_dict(u) for u in d.get("units", [])],
            alerts=[AlertRecord.from_dict(a) for a in d.get("alerts", [])],
            replies=[ReplyRecord.from_dict(r) for r in d.get("replies", [])],
            answers={str(k): str(v) for k, v in d.get("answers", {}).items()},
            duration_s=float(d.get("duration_s", 0.0)),
            wall_s=float(d.get("wall_s", 0.0)),
            origin=None if d.get("origin") is None else float(d["origin"]),
            meta=dict(d.get("meta", {})),
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "BagResult":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
