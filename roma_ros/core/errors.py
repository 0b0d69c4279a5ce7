"""Typed errors for bad sensor input. Nodes count them per `reason` and keep running."""
from __future__ import annotations


class DecodeError(ValueError):
    """A message that cannot be turned into frames or samples.

    `reason` is a short stable key (used as a diagnostics counter name); the message says what
    was wrong and, where there is one, how to fix it.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
