"""Ground truth for offline evaluation: monitoring tasks with event windows, and timed queries.

The format is documented in docs/annotations.md. In short (YAML or JSON, same schema):

```yaml
version: 1
origin: 1700000000.0          # optional: absolute sensor time (s) of t = 0
tasks:
  - id: fall
    instruction: Alert me when someone falls.
    mode: alert               # alert | narration (default alert)
    metric: pa                # pa | po | rec | crr (alert), narration (narration)
    threshold: 0.5            # optional per-task decision rule overrides
    window: 5
    cooldown: 10.0
    events: [[12.0, 18.5], [40, 47]]
queries:
  - id: q-color
    time: 30.0
    text: What color is the mug?
    answers: [red, dark red]
```

All times are seconds since the stream origin. Validation collects every problem and raises one
`AnnotationError` whose message names each field path, e.g.
``tasks[1].events[0]: end 3.0 is before start 5.0``. Unknown keys are rejected.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SCHEMA_VERSION = 1
MODES = ("alert", "narration")
METRICS_BY_MODE = {"alert": ("pa", "po", "rec", "crr"), "narration": ("narration",)}
DEFAULT_METRIC = {"alert": "pa", "narration": "narration"}
DEFAULT_PO_TOLERANCE_S = 2.0

_TOP_KEYS = {"version", "origin", "description", "tasks", "queries"}
_TASK_KEYS = {
    "id", "instruction", "mode", "metric", "threshold", "window", "cooldown", "tolerance",
    "events", "ask_time", "clue_time", "description",
}
_EVENT_KEYS = {"start", "end", "text"}
_QUERY_KEYS = {"id", "time", "text", "answers", "clue_time"}


class AnnotationError(ValueError):
    """An annotation file that does not follow the schema. `problems` lists (path, message)."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = list(problems)
        lines = [f"{p}: {m}" if p else m for p, m in self.problems]
        if len(lines) == 1:
            text = f"{source}: {lines[0]}"
        else:
            text = f"{source}: {len(lines)} problems\n" + "\n".join(f"  {line}" for line in lines)
        super().__init__(text)


@dataclass(frozen=True)
class Event:
    """A ground-truth event of one task, in seconds since the origin.

    Interval events (pa, rec, narration) have start <= end; point events (po) have start == end.
    `text` is an optional reference caption (narration text similarity).
    """

    start: float
    end: float
    text: str | None = None

    @property
    def is_point(self) -> bool:
        return self.start == self.end

    def to_obj(self) -> Any:
        if self.text is not None:
            return {"start": self.start, "end": self.end, "text": self.text}
        return [self.start, self.end]


@dataclass
class Task:
    """A standing monitoring task as given to the engine, plus its ground truth."""

    id: str
    instruction: str
    mode: str = "alert"
    metric: str = "pa"
    events: list[Event] = field(default_factory=list)
    threshold: float | None = None  # decision-rule overrides; None = the runner's default
    window: int | None = None
    cooldown: float | None = None
    tolerance: float | None = None  # None = metric default (2 s for po, 0 otherwise)
    ask_time: float = 0.0  # when the instruction is given; earlier triggers are ignored
    clue_time: float | None = None  # crr only
    description: str | None = None

    @property
    def effective_tolerance(self) -> float:
        """Seconds of slack for PO success, false alarms, detection delays and the sweep."""
        if self.tolerance is not None:
            return self.tolerance
        return DEFAULT_PO_TOLERANCE_S if self.metric == "po" else 0.0

    @property
    def intervals(self) -> list[tuple[float, float]]:
        """Event intervals sorted by start."""
        return sorted((e.start, e.end) for e in self.events)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "instruction": self.instruction, "mode": self.mode,
                               "metric": self.metric}
        for key in ("threshold", "window", "cooldown", "tolerance"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.ask_time:
            out["ask_time"] = self.ask_time
        if self.clue_time is not None:
            out["clue_time"] = self.clue_time
        out["events"] = [e.to_obj() for e in self.events]
        if self.description is not None:
            out["description"] = self.description
        return out


@dataclass
class Query:
    """A question asked at `time` (seconds since the origin) with its accepted answers."""

    id: str
    time: float
    text: str
    answers: list[str] = field(default_factory=list)
    clue_time: float | None = None  # the answer is only knowable from this time on

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "time": self.time, "text": self.text, "answers": list(self.answers)}
        if self.clue_time is not None:
            out["clue_time"] = self.clue_time
        return out


@dataclass
class Annotations:
    """A validated annotation file."""

    version: int = SCHEMA_VERSION
    origin: float | None = None
    tasks: list[Task] = field(default_factory=list)
    queries: list[Query] = field(default_factory=list)
    description: str | None = None
    source: str = "<annotations>"

    def task(self, task_id: str) -> Task:
        for task in self.tasks:
            if task.id == task_id:
                return task
        raise KeyError(f"no task {task_id!r} in {self.source}")

    def query(self, query_id: str) -> Query:
        for query in self.queries:
            if query.id == query_id:
                return query
        raise KeyError(f"no query {query_id!r} in {self.source}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": self.version}
        if self.origin is not None:
            out["origin"] = self.origin
        if self.description is not None:
            out["description"] = self.description
        out["tasks"] = [t.to_dict() for t in self.tasks]
        out["queries"] = [q.to_dict() for q in self.queries]
        return out


# --- validation helpers -------------------------------------------------------------------------


class _Checker:
    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []

    def err(self, path: str, message: str) -> None:
        self.problems.append((path, message))

    def mapping(self, value: Any, path: str, allowed: set[str], required: tuple[str, ...] = ()) -> bool:
        if not isinstance(value, dict):
            self.err(path, f"expected a mapping, got {_kind(value)}")
            return False
        for key in value:
            if not isinstance(key, str):
                self.err(path, f"keys must be strings, got {key!r}")
            elif key not in allowed:
                self.err(_join(path, key), f"unknown key (allowed: {', '.join(sorted(allowed))})")
        for key in required:
            if key not in value:
                self.err(_join(path, key), "missing (required)")
        return True

    def number(self, value: Any, path: str, minimum: float | None = None, maximum: float | None = None) -> float | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.err(path, f"expected a number, got {_kind(value)}")
            return None
        if not math.isfinite(value):
            self.err(path, f"expected a finite number, got {value}")
            return None
        if minimum is not None and value < minimum:
            self.err(path, f"{value} is below the minimum {minimum}")
            return None
        if maximum is not None and value > maximum:
            self.err(path, f"{value} is above the maximum {maximum}")
            return None
        return float(value)

    def integer(self, value: Any, path: str, minimum: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                self.err(path, f"expected an integer, got {_kind(value)}")
                return None
        if value < minimum:
            self.err(path, f"{value} is below the minimum {minimum}")
            return None
        return int(value)

    def string(self, value: Any, path: str, allow_empty: bool = False) -> str | None:
        if not isinstance(value, str):
            self.err(path, f"expected a string, got {_kind(value)}")
            return None
        if not allow_empty and not value.strip():
            self.err(path, "must not be empty")
            return None
        return value

    def choice(self, value: Any, path: str, choices: tuple[str, ...]) -> str | None:
        text = self.string(value, path)
        if text is None:
            return None
        if text not in choices:
            self.err(path, f"{text!r} is not one of {', '.join(choices)}")
            return None
        return text


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})" if len(value) <= 40 else "a string"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _fmt(t: float) -> str:
    return str(float(t))


def _parse_event(c: _Checker, raw: Any, path: str, metric: str) -> Event | None:
    text = None
    if isinstance(raw, dict):
        required = ("start",) if metric == "po" else ("start", "end")
        if not c.mapping(raw, path, _EVENT_KEYS, required=required) or any(k not in raw for k in required):
            return None
        start = c.number(raw["start"], _join(path, "start"), minimum=0.0)
        end = c.number(raw["end"], _join(path, "end"), minimum=0.0) if "end" in raw else start
        if "text" in raw:
            text = c.string(raw["text"], _join(path, "text"), allow_empty=True)
    elif isinstance(raw, list):
        if len(raw) == 1 and metric == "po":
            raw = [raw[0], raw[0]]
        if len(raw) != 2:
            c.err(path, f"expected [start, end], got a list of {len(raw)} items")
            return None
        start = c.number(raw[0], _join(path, 0), minimum=0.0)
        end = c.number(raw[1], _join(path, 1), minimum=0.0)
    elif isinstance(raw, (int, float)) and not isinstance(raw, bool):
        if metric != "po":
            c.err(path, f"a single time is only valid for metric po; {metric} needs [start, end]")
            return None
        start = end = c.number(raw, path, minimum=0.0)
    else:
        c.err(path, f"expected [start, end] or a mapping with start/end, got {_kind(raw)}")
        return None
    if start is None or end is None:
        return None
    if end < start:
        c.err(path, f"end {_fmt(end)} is before start {_fmt(start)}")
        return None
    if metric == "po" and end != start:
        c.err(path, f"metric po needs a single time (t or [t, t]), got [{_fmt(start)}, {_fmt(end)}]")
        return None
    if metric == "narration" and end == start:
        c.err(path, f"narration windows are [start, end) and need end > start, got [{_fmt(start)}, {_fmt(end)}]")
        return None
    return Event(start, end, text)


def _parse_task(c: _Checker, raw: Any, path: str) -> Task | None:
    if not c.mapping(raw, path, _TASK_KEYS, required=("id", "instruction")):
        return None
    n_before = len(c.problems)
    task_id = c.string(raw.get("id", ""), _join(path, "id")) if "id" in raw else None
    instruction = c.string(raw["instruction"], _join(path, "instruction")) if "instruction" in raw else None
    mode_ok = c.choice(raw.get("mode", "alert"), _join(path, "mode"), MODES)
    mode = mode_ok or "alert"
    metric_raw = raw.get("metric", DEFAULT_METRIC[mode])
    allowed = METRICS_BY_MODE[mode] if mode_ok else ("pa", "po", "rec", "crr", "narration")
    metric = c.choice(metric_raw, _join(path, "metric"), allowed)
    if metric is None and isinstance(metric_raw, str) and metric_raw in ("pa", "po", "rec", "crr", "narration"):
        c.problems[-1] = (_join(path, "metric"), f"{metric_raw!r} is not valid for mode {mode!r} "
                          f"(use one of {', '.join(METRICS_BY_MODE[mode])})")
    metric = metric or DEFAULT_METRIC[mode]
    threshold = window = cooldown = tolerance = clue_time = None
    if "threshold" in raw:
        threshold = c.number(raw["threshold"], _join(path, "threshold"), minimum=0.0, maximum=1.0)
    if "window" in raw:
        window = c.integer(raw["window"], _join(path, "window"), minimum=1)
    if "cooldown" in raw:
        cooldown = c.number(raw["cooldown"], _join(path, "cooldown"), minimum=0.0)
    if "tolerance" in raw:
        tolerance = c.number(raw["tolerance"], _join(path, "tolerance"), minimum=0.0)
    ask_time = 0.0
    if "ask_time" in raw:
        ask_time = c.number(raw["ask_time"], _join(path, "ask_time"), minimum=0.0) or 0.0
    if "clue_time" in raw:
        if metric != "crr":
            c.err(_join(path, "clue_time"), f"only used with metric crr (this task's metric is {metric})")
        else:
            clue_time = c.number(raw["clue_time"], _join(path, "clue_time"), minimum=0.0)
            if clue_time is not None and clue_time < ask_time:
                c.err(_join(path, "clue_time"), f"{_fmt(clue_time)} is before ask_time {_fmt(ask_time)}")
    elif metric == "crr":
        c.err(_join(path, "clue_time"), "missing (metric crr needs ask_time and clue_time)")
    if metric == "crr" and "ask_time" not in raw:
        c.err(_join(path, "ask_time"), "missing (metric crr needs ask_time and clue_time)")
    description = None
    if "description" in raw:
        description = c.string(raw["description"], _join(path, "description"), allow_empty=True)

    events: list[Event] = []
    raw_events = raw.get("events", [])
    epath = _join(path, "events")
    if metric == "crr" and raw_events:
        c.err(epath, "metric crr is scored from ask_time and clue_time; leave events out")
    elif not isinstance(raw_events, list):
        c.err(epath, f"expected a list of events, got {_kind(raw_events)}")
    else:
        indexed: list[tuple[int, Event]] = []
        for i, raw_event in enumerate(raw_events):
            event = _parse_event(c, raw_event, _join(epath, i), metric)
            if event is not None:
                indexed.append((i, event))
        indexed.sort(key=lambda ie: (ie[1].start, ie[1].end))
        for (i_prev, prev), (i_cur, cur) in zip(indexed, indexed[1:]):
            if cur.start < prev.end or (cur.start, cur.end) == (prev.start, prev.end):
                c.err(_join(epath, i_cur), f"[{_fmt(cur.start)}, {_fmt(cur.end)}] overlaps events[{i_prev}] "
                      f"[{_fmt(prev.start)}, {_fmt(prev.end)}]; events of one task must not overlap")
        events = [e for _, e in sorted(indexed, key=lambda ie: ie[0])]
    if len(c.problems) > n_before or task_id is None or instruction is None:
        return None
    return Task(id=task_id, instruction=instruction, mode=mode, metric=metric, events=events,
                threshold=threshold, window=window, cooldown=cooldown, tolerance=tolerance,
                ask_time=ask_time, clue_time=clue_time, description=description)


def _parse_query(c: _Checker, raw: Any, path: str, index: int) -> Query | None:
    if not c.mapping(raw, path, _QUERY_KEYS, required=("time", "text")):
        return None
    n_before = len(c.problems)
    query_id = c.string(raw["id"], _join(path, "id")) if "id" in raw else f"q{index}"
    time = c.number(raw["time"], _join(path, "time"), minimum=0.0) if "time" in raw else None
    text = c.string(raw["text"], _join(path, "text")) if "text" in raw else None
    answers: list[str] = []
    if "answers" in raw:
        apath = _join(path, "answers")
        value = raw["answers"]
        if isinstance(value, str):
            c.err(apath, f"expected a list of strings, got a string (write [{json.dumps(value)}])")
        elif not isinstance(value, list):
            c.err(apath, f"expected a list of strings, got {_kind(value)}")
        else:
            from roma_ros.eval.metrics import normalize_answer  # local: metrics imports this module

            for i, answer in enumerate(value):
                text_i = c.string(answer, _join(apath, i))
                if text_i is None:
                    continue
                if not normalize_answer(text_i):
                    c.err(_join(apath, i), f"{text_i!r} is empty after normalization (lowercase, no "
                          "punctuation or articles) and could never match")
                    continue
                answers.append(text_i)
    clue_time = None
    if "clue_time" in raw:
        clue_time = c.number(raw["clue_time"], _join(path, "clue_time"), minimum=0.0)
        if clue_time is not None and time is not None and clue_time < time:
            c.err(_join(path, "clue_time"), f"{_fmt(clue_time)} is before the query time {_fmt(time)}")
    if len(c.problems) > n_before or query_id is None or time is None or text is None:
        return None
    return Query(id=query_id, time=time, text=text, answers=answers, clue_time=clue_time)


def parse_annotations(data: Any, source: str = "<annotations>") -> Annotations:
    """Validate a decoded annotation document (dict) and build `Annotations`.

    Raises `AnnotationError` listing every problem with its field path.
    """
    c = _Checker()
    if not c.mapping(data, "", _TOP_KEYS, required=("version",)):
        raise AnnotationError(source, c.problems)
    version = data.get("version")
    if "version" in data and (isinstance(version, bool) or version != SCHEMA_VERSION):
        c.err("version", f"unsupported version {version!r} (this reader knows version {SCHEMA_VERSION})")
    origin = None
    if "origin" in data and data["origin"] is not None:
        origin = c.number(data["origin"], "origin", minimum=0.0)
    description = None
    if "description" in data:
        description = c.string(data["description"], "description", allow_empty=True)

    tasks: list[Task] = []
    raw_tasks = data.get("tasks") or []
    if not isinstance(raw_tasks, list):
        c.err("tasks", f"expected a list of tasks, got {_kind(raw_tasks)}")
        raw_tasks = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_tasks):
        task = _parse_task(c, raw, f"tasks[{i}]")
        if task is None:
            continue
        if task.id in seen:
            c.err(f"tasks[{i}].id", f"duplicate id {task.id!r} (also tasks[{seen[task.id]}])")
            continue
        seen[task.id] = i
        tasks.append(task)

    queries: list[Query] = []
    raw_queries = data.get("queries") or []
    if not isinstance(raw_queries, list):
        c.err("queries", f"expected a list of queries, got {_kind(raw_queries)}")
        raw_queries = []
    seen = {}
    for i, raw in enumerate(raw_queries):
        query = _parse_query(c, raw, f"queries[{i}]", i)
        if query is None:
            continue
        if query.id in seen:
            c.err(f"queries[{i}].id", f"duplicate id {query.id!r} (also queries[{seen[query.id]}])")
            continue
        seen[query.id] = i
        queries.append(query)

    if c.problems:
        raise AnnotationError(source, c.problems)
    return Annotations(version=SCHEMA_VERSION, origin=origin, tasks=tasks, queries=queries,
                       description=description, source=source)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys instead of keeping the last one."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {mark.line + 1}, column {mark.column + 1})", mark)
        seen[key] = True
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _reject_duplicate_json_keys(pairs: list[tuple[str, Any]]) -> dict:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def load_annotations(path: str | Path) -> Annotations:
    """Read and validate an annotation file (.json as JSON, anything else as YAML).

    Raises `AnnotationError` (a ValueError) for syntax errors and schema violations, and
    FileNotFoundError when the file is missing.
    """
    path = Path(path)
    source = str(path)
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text, object_pairs_hook=_reject_duplicate_json_keys)
        else:
            data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except json.JSONDecodeError as exc:
        raise AnnotationError(source, [("", f"invalid JSON: {exc}")]) from exc
    except (yaml.YAMLError, ValueError) as exc:
        raise AnnotationError(source, [("", f"invalid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: "
                                        f"{exc}")]) from exc
    if data is None:
        raise AnnotationError(source, [("", "the file is empty")])
    return parse_annotations(data, source)


def save_annotations(annotations: Annotations, path: str | Path) -> None:
    """Write annotations as YAML (or JSON when the path ends in .json)."""
    path = Path(path)
    data = annotations.to_dict()
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
