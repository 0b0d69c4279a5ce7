"""Which stream a message belongs to: jumps, outliers and stragglers (no rclpy).

A glitched stamp must cost one message, not the stream: a lone stamp ahead of the others would
otherwise become the stream's newest time and make every correct message after it look like a
jump back. So no single message moves the stream far; only agreeing messages do.

Rules, per message of one modality (video or audio), with `tolerance` = restart_tolerance,
`slack` = modality_timeout and `confirm` = jump_confirm_count:

- In step: the stamp lies in [own - tolerance, top + tolerance], where own is the modality's
  latest stamp in the stream (reordering within max_delay < tolerance stays in step) and top
  the stream's newest stamp of either modality. A modality's first message in the stream
  stands in for own with the stream's earliest stamp minus `slack` (an input that lags the
  other is not a jump). In-step messages are accepted at once; a lone stamp within
  `tolerance` ahead cannot be told from jitter and is accepted too (it moves the stream's top
  by less than `tolerance`, so the messages after it stay in step).
- Anything else is a candidate: held, not used. A modality's consecutive candidates that agree
  (each in step with the ones before, forward steps up to max_forward_jump so that slow
  sensors agree) form its group; a candidate that disagrees replaces the group, whose messages
  become outliers. Groups of different modalities agree when their stamp ranges lie within
  `tolerance` of each other.
- A jump is confirmed once a group and the groups agreeing with it hold `confirm` messages and
  no other input contradicts it. Every other input of the stream contradicts a new group until
  it sends a candidate itself; one that sends in-step messages keeps contradicting; one that
  sends nothing stops contradicting once the group spans `slack` (its stamps): it is silent.
  Presuming contradiction matters because inputs have different rates: a 30 fps camera on
  another clock sends several frames between two 10 Hz audio chunks. So a bag loop (both
  inputs jump) is confirmed within a few messages, a jump of the only live input after
  `slack`, while an input that disagrees with the other (a frozen or offset clock, forged
  stamps) cannot move the stream: its messages end as outliers and the input shows up as
  starved, not as a restart. Before the first stream nothing contradicts: the first group to
  be confirmed starts it.
- A confirmed jump continues the stream when its earliest stamp fits the stream with a
  forward step of at most max_forward_jump (a pause: the gap stays empty), else the stream
  restarts with it (a loop, a simulator restart, a jump beyond max_forward_jump).
- An in-step message of a modality ends that modality's group: candidates now in step are
  released (the stream caught up with them), the rest are outliers. A group holds at most
  its modality's limit of messages (GROUP_LIMIT unless set: frames are large, audio chunks
  small and frequent, and a group may wait up to `slack` for the other input); older ones drop
  out as outliers.
- A jump back by less than `tolerance` + `slack` may re-enter the old stream's window before
  it is confirmed; those messages then read as late ones of the old stream (a bag loop is
  normally much longer).
- Stragglers: after a restart, a message in step with the previous stream (and not with the
  new one) is stale: dropped and counted, not an error.
- At end of input, groups with no stream to judge them by become the stream; otherwise they
  are outliers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

GROUP_LIMIT = 16  # held candidates (frame payloads are large): the newest are kept


@dataclass
class Entry:
    modality: str
    stamp: int
    item: Any


@dataclass
class Decision:
    """What to do with a message (and with held ones) now."""

    restart: bool = False  # flush the current stream, then ingest into a new one
    ingest: list[Entry] = field(default_factory=list)  # in this order
    outliers: list[Entry] = field(default_factory=list)  # unconfirmed jumps: drop, count
    stale: bool = False  # this message is a straggler of the previous stream: drop


@dataclass
class _Span:
    """The latest stamp of each modality and the earliest stamp of a set of messages."""

    latest: dict[str, int] = field(default_factory=dict)
    earliest: int | None = None

    @classmethod
    def of(cls, entries: list[Entry]) -> "_Span":
        span = cls()
        for entry in entries:
            span.add(entry.modality, entry.stamp)
        return span

    @property
    def empty(self) -> bool:
        return self.earliest is None

    @property
    def top(self) -> int:
        return max(self.latest.values())

    def add(self, modality: str, stamp: int) -> None:
        self.latest[modality] = max(stamp, self.latest.get(modality, stamp))
        self.earliest = stamp if self.earliest is None else min(self.earliest, stamp)


@dataclass
class StreamTimeline:
    """Classifies message stamps (ns) into the current stream, a jump, or neither."""

    tolerance_ns: int
    max_jump_ns: int
    slack_ns: int = 0
    confirm_count: int = 3
    stream: _Span = field(default_factory=_Span)
    previous: _Span = field(default_factory=_Span)
    groups: dict[str, list[Entry]] = field(default_factory=dict)  # per modality, candidates
    contested: dict[str, set[str]] = field(default_factory=dict)  # group -> inputs against it
    heard: dict[str, set[str]] = field(default_factory=dict)  # group -> inputs heard since it began
    began: dict[str, int] = field(default_factory=dict)  # group -> its first stamp
    group_limits: dict[str, int] = field(default_factory=dict)  # modality -> held messages (default GROUP_LIMIT)

    def _fits(self, span: _Span, modality: str, stamp: int, forward_ns: int) -> bool:
        own = span.latest.get(modality, span.earliest - self.slack_ns)
        return own - self.tolerance_ns <= stamp <= span.top + forward_ns

    def in_step(self, modality: str, stamp: int) -> bool:
        return not self.stream.empty and self._fits(self.stream, modality, stamp, self.tolerance_ns)

    def offer(self, modality: str, stamp: int, item: Any = None) -> Decision:
        if self.in_step(modality, stamp):
            return self._accept(Entry(modality, stamp, item))
        if not self.previous.empty and self._fits(self.previous, modality, stamp, self.tolerance_ns):
            return Decision(stale=True)
        return self._candidate(Entry(modality, stamp, item))

    def _accept(self, entry: Entry) -> Decision:
        decision = Decision()
        for held in self.groups.pop(entry.modality, []):
            if self.in_step(held.modality, held.stamp):
                self.stream.add(held.modality, held.stamp)
                decision.ingest.append(held)
            else:
                decision.outliers.append(held)
        self._forget(entry.modality)
        for group, against in self.contested.items():
            against.add(entry.modality)
            self.heard[group].add(entry.modality)
        self.stream.add(entry.modality, entry.stamp)
        decision.ingest.append(entry)
        return decision

    def _agree(self, a: list[Entry], b: list[Entry]) -> bool:
        return (min(e.stamp for e in a) <= max(e.stamp for e in b) + self.tolerance_ns
                and min(e.stamp for e in b) <= max(e.stamp for e in a) + self.tolerance_ns)

    def _candidate(self, entry: Entry) -> Decision:
        decision = Decision()
        modality = entry.modality
        group = self.groups.get(modality, [])
        if group and not self._fits(_Span.of(group), modality, entry.stamp, self.max_jump_ns):
            decision.outliers, group = group, []
        if not group:
            self.contested[modality] = set(self.stream.latest) - {modality}
            self.heard[modality] = set()
            self.began[modality] = entry.stamp
        group.append(entry)
        if len(group) > self.group_limits.get(modality, GROUP_LIMIT):
            decision.outliers.append(group.pop(0))
        self.groups[modality] = group
        for other, against in self.contested.items():
            against.discard(modality)
            self.heard[other].add(modality)
        support = [m for m, other in self.groups.items() if m == modality or self._agree(group, other)]
        if self._contradicted(support) or sum(len(self.groups[m]) for m in support) < self.confirm_count:
            return decision
        confirmed = sorted((e for m in support for e in self.groups.pop(m)), key=lambda e: e.stamp)
        for m in support:
            self._forget(m)
        first = confirmed[0]
        if self.stream.empty or not self._fits(self.stream, first.modality, first.stamp, self.max_jump_ns):
            decision.restart = not self.stream.empty
            self.previous, self.stream = self.stream, _Span()
        for held in confirmed:
            self.stream.add(held.modality, held.stamp)
        decision.ingest = confirmed
        return decision

    def _contradicted(self, support: list[str]) -> bool:
        """Whether an input outside the agreeing groups contradicts any of them."""
        for modality in support:
            span = max(e.stamp for e in self.groups[modality]) - self.began[modality]
            if any(m not in support and (m in self.heard[modality] or span < self.slack_ns)
                   for m in self.contested[modality]):
                return True
        return False

    def _forget(self, modality: str) -> None:
        for table in (self.contested, self.heard, self.began):
            table.pop(modality, None)

    def end_of_input(self) -> Decision:
        """Held candidates at the end of input: outliers, or the stream if there is none yet."""
        held = sorted((e for group in self.groups.values() for e in group), key=lambda e: e.stamp)
        self.groups.clear()
        for table in (self.contested, self.heard, self.began):
            table.clear()
        if self.stream.empty and held:
            for entry in held:
                self.stream.add(entry.modality, entry.stamp)
            return Decision(ingest=held)
        return Decision(outliers=held)
