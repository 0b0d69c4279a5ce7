"""Whose turn it is in the stream, and what waits for the model's next turn (no torch).

Two states:
- LISTENING: units come in; questions are inserted into the context as they are asked and wait
  there for their answer (`waiting`), oldest first.
- ANSWERING: one response is being generated, a segment per unit. Questions asked now, and a
  change of the standing instructions, would land inside the answer's turn, so they are held
  (`held_questions`, `held_instructions`) until it finishes.

Transitions:
    LISTENING --start(response)--> ANSWERING      (a waiting question, or a spontaneous response)
    ANSWERING --finish()--------> LISTENING       (returns what was held, to insert now)
The model (roma.RomaModel) does the context work each transition asks for; this class only keeps
the state and refuses transitions that do not exist.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from roma_ros.engine.generation import Response


class Turn(Enum):
    LISTENING = "listening"
    ANSWERING = "answering"


@dataclass
class Question:
    query_id: str
    text: str
    gated: bool  # answered once the speak head says so (else at the next unit)
    gid: int = -1  # its cache group, once inserted


@dataclass
class Held:
    """What finish() hands back: to insert into the context now that the turn is over."""

    instructions: list[str] | None
    questions: list[Question]


@dataclass
class Turns:
    waiting: deque[Question] = field(default_factory=deque)  # inserted, answer not started
    held_questions: deque[Question] = field(default_factory=deque)  # asked while answering
    held_instructions: list[str] | None = None  # set while answering
    response: Response | None = None

    @property
    def state(self) -> Turn:
        return Turn.ANSWERING if self.response is not None else Turn.LISTENING

    @property
    def pending_questions(self) -> int:
        return len(self.waiting) + len(self.held_questions)

    def ask(self, question: Question) -> bool:
        """True: insert it into the context now (then `inserted`); False: held until the turn ends."""
        if self.state is Turn.ANSWERING:
            self.held_questions.append(question)
            return False
        return True

    def inserted(self, question: Question) -> None:
        self.waiting.append(question)

    def set_instructions(self, instructions: list[str]) -> bool:
        """True: change them in the context now; False: held until the turn ends (the last wins)."""
        if self.state is Turn.ANSWERING:
            self.held_instructions = list(instructions)
            return False
        return True

    def next_question(self, prob: float | None, threshold: float) -> Question | None:
        """The waiting question to answer at this unit (removed from `waiting`), if any: the oldest
        one, unless it is gated and `prob` is below `threshold` (prob None: answer regardless)."""
        if self.state is not Turn.LISTENING or not self.waiting:
            return None
        first = self.waiting[0]
        if prob is not None and first.gated and prob < threshold:
            return None
        return self.waiting.popleft()

    def start(self, response: Response) -> None:
        if self.state is not Turn.LISTENING:
            raise RuntimeError("a response is already in progress")
        self.response = response

    def finish(self) -> Held:
        if self.state is not Turn.ANSWERING:
            raise RuntimeError("no response in progress")
        self.response = None
        held = Held(self.held_instructions, list(self.held_questions))
        self.held_instructions = None
        self.held_questions.clear()
        return held
