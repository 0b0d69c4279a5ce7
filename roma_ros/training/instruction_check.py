"""Does ROMA-tiny follow its instruction? The instruction x event confusion table.

The same generated streams are run once per single-condition instruction ("Alert me when a cat
appears." / "... the alarm beeps." / "... someone calls for help."). For every kind of event
(each object on screen, each sound, nothing at all) the table gives the fraction of its units on
which the alert rule fires (p >= threshold on `window` consecutive units ending there). A model
that follows its instruction fires on the diagonal and nowhere else; one that ignores it fires
on every row alike.
"""
from __future__ import annotations

import numpy as np

from roma_ros.training import data

INSTRUCTED = ("cat", "alarm", "help")
EVENTS = ("cat", "person", "cup", "rocket", "alarm", "music", "noise", "help", "talk", "nothing")


def fires(probs: np.ndarray, threshold: float = 0.5, window: int = 2) -> np.ndarray:
    """Per unit: the rule's condition holds on the `window` units ending at it."""
    above = np.asarray(probs) >= threshold
    out = np.zeros(len(above), bool)
    for k in range(window - 1, len(above)):
        out[k] = above[k - window + 1:k + 1].all()
    return out


def unit_events(stream: data.Stream, k: int) -> list[str]:
    ev = []
    if stream.objects[k] is not None:
        ev.append(stream.objects[k])
    if stream.sounds[k] != "quiet":
        ev.append(stream.sounds[k])
    return ev or ["nothing"]


def stream_probs(model, stream: data.Stream, instruction: str) -> np.ndarray:
    model.reset()
    model.set_instructions([instruction])
    return np.array([model.ingest(u).prob for u in stream.units])


def confusion(model, seed: int, n_streams: int = 6, n_units: int = 40, split: str = "heldout",
              threshold: float = 0.5, window: int = 2) -> dict:
    """{"rates": {instruction: {event: fire rate}}, "units": {event: count}, ...}."""
    gen = data.StreamGenerator(seed, split=split)
    streams = [gen.stream(n_units, focus=INSTRUCTED[i % len(INSTRUCTED)]) for i in range(n_streams)]
    hits = {c: {e: 0 for e in EVENTS} for c in INSTRUCTED}
    counts = {e: 0 for e in EVENTS}
    for s in streams:
        events = [unit_events(s, k) for k in range(len(s.units))]
        for ev in events:
            for e in ev:
                counts[e] += 1
        for c in INSTRUCTED:
            f = fires(stream_probs(model, s, data.alert_instruction([c])), threshold, window)
            for k, ev in enumerate(events):
                for e in ev:
                    hits[c][e] += int(f[k])
    rates = {c: {e: (round(hits[c][e] / counts[e], 3) if counts[e] else None) for e in EVENTS} for c in INSTRUCTED}
    return {"seed": seed, "split": split, "streams": n_streams, "units_per_stream": n_units,
            "rule": {"threshold": threshold, "window": window}, "units": counts, "rates": rates}


def markdown(table: dict) -> str:
    head = "| instruction \\ event | " + " | ".join(EVENTS) + " |"
    sep = "|---" * (len(EVENTS) + 1) + "|"
    rows = []
    for c, r in table["rates"].items():
        rows.append(f"| {c} | " + " | ".join("-" if r[e] is None else f"{r[e]:.2f}" for e in EVENTS) + " |")
    units = "| units | " + " | ".join(str(table["units"][e]) for e in EVENTS) + " |"
    return "\n".join([head, sep, *rows, units])
