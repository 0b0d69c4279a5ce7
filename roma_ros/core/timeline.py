"""Which stream a message belongs to: stream restarts, stragglers and glitched stamps (no rclpy).

Rules, per message of one modality (video or audio), with `tolerance` = restart_tolerance and
`max_jump` = max_forward_jump:

- In range: the stamp is >= the modality's latest stamp in this stream minus `tolerance`
  (reordering within max_delay < tolerance stays in range; a modality's first message in the
  stream may lie up to `tolerance` + `first_slack` (= modality_timeout) before the stream's
  earliest stamp, so an input that lags the other is not mistaken for a jump) and <= the
  stream's latest stamp plus `max_jump`. The message is accepted.
- A jump (backwards beyond `tolerance`, e.g. a bag loop or a restarted simulator; or forwards
  beyond `max_jump`) must be confirmed by the next message of the same modality landing in range
  of the jumped one. Then the stream restarts: the old stream is flushed and the new one starts
  with both messages. An unconfirmed jump (the next message is back in range of the current
  stream) was a glitched stamp: that one message is dropped and counted.
- Stragglers: after a restart, messages of the other modality that still continue the old
  timeline (stamped from `straggler_margin` (= max_delay) before its last stamp there to
  `tolerance` after it, tracking it as it goes on) are dropped until that modality also
  arrives on the new timeline (or had a message held that lies on it).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Verdict(enum.Enum):
    ACCEPT = "accept"  # belongs to the current stream
    HOLD = "hold"  # a possible jump: keep it until the next message of its modality decides
    RESTART = "restart"  # confirmed jump: flush, start a new stream with the held message + this
    STALE = "stale"  # a straggler of the previous stream: drop


@dataclass
class Decision:
    verdict: Verdict
    dropped_held: bool = False  # the held message of this modality was a glitch: drop it
    release_held: bool = False  # the held message belongs to the current stream: ingest it first


@dataclass
class StreamTimeline:
    """Classifies message stamps (ns) into the current stream, a new stream, or neither."""

    tolerance_ns: int
    max_jump_ns: int
    straggler_margin_ns: int = 0
    first_slack_ns: int = 0
    latest: dict[str, int] = field(default_factory=dict)  # per modality, current stream
    earliest: int | None = None  # current stream
    held: dict[str, int] = field(default_factory=dict)  # stamp of a held (possible jump) message
    previous: dict[str, int] = field(default_factory=dict)  # per modality, last stream's latest
    joined: set[str] = field(default_factory=set)  # modalities seen on the current timeline

    @property
    def stream_latest(self) -> int | None:
        return max(self.latest.values()) if self.latest else None

    def _in_range(self, modality: str, stamp: int, reference: int | None = None) -> bool:
        if reference is not None:
            lowest, highest = reference, reference
        elif self.earliest is None:
            return True
        else:
            own = self.latest.get(modality)
            lowest = own if own is not None else self.earliest - self.first_slack_ns
            highest = self.stream_latest
        return lowest - self.tolerance_ns <= stamp <= highest + self.max_jump_ns

    def _accept(self, modality: str, stamp: int) -> None:
        self.latest[modality] = max(stamp, self.latest.get(modality, stamp))
        self.earliest = stamp if self.earliest is None else min(self.earliest, stamp)
        self.joined.add(modality)

    def classify(self, modality: str, stamp: int) -> Decision:
        previous = self.previous.get(modality)
        if (
            modality not in self.joined
            and previous is not None
            and previous - self.straggler_margin_ns <= stamp <= previous + self.tolerance_ns
        ):
            self.previous[modality] = max(previous, stamp)
            return Decision(Verdict.STALE)
        held = self.held.pop(modality, None)
        if self._in_range(modality, stamp):
            if held is not None and self._in_range(modality, held):
                # held before a restart by the other modality, and on the new timeline
                self._accept(modality, held)
                self._accept(modality, stamp)
                return Decision(Verdict.ACCEPT, release_held=True)
            self._accept(modality, stamp)
            return Decision(Verdict.ACCEPT, dropped_held=held is not None)
        if held is not None and self._in_range(modality, stamp, reference=held):
            self._restart(modality, max(stamp, held))
            return Decision(Verdict.RESTART)
        self.held[modality] = stamp
        return Decision(Verdict.HOLD, dropped_held=held is not None)

    def _restart(self, modality: str, stamp: int) -> None:
        self.previous = dict(self.latest)
        self.latest = {}
        self.earliest = None
        self.joined = set()
        self._accept(modality, stamp)
        for other, held in self.held.items():  # already seen on the new timeline: not stale
            if self._in_range(other, held):
                self.joined.add(other)

    def drop_held(self) -> list[str]:
        """Forget held messages (end of input); returns their modalities."""
        modalities = list(self.held)
        self.held.clear()
        return modalities
