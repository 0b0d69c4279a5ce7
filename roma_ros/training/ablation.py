"""Record ablation runs in a model's metrics.json (the model card's ablation table).

    python -m roma_ros.training.train --out /tmp/abl_notowers --tower-steps 0
    python -m roma_ros.training.train --out /tmp/abl_nocontrast --tasks-per-window 1
    python -m roma_ros.training.ablation roma_ros/models/roma_tiny \\
        "no tower pretraining=/tmp/abl_notowers" "one instruction per window=/tmp/abl_nocontrast"

Each variant is the full training command with one argument changed, evaluated the same way
(held-out assets, confusion table); the shipped model is recorded first as the reference.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from roma_ros.training.instruction_check import EVENTS


def confusion_summary(conf: dict) -> tuple[float, float]:
    """(mean fire rate on the instructed event, mean fire rate on every other event)."""
    diag, off = [], []
    for instr, rates in conf["rates"].items():
        for e in EVENTS:
            if rates[e] is None:
                continue
            (diag if e == instr else off).append(rates[e])
    return sum(diag) / len(diag), sum(off) / len(off)


def row(variant: str, model_dir: Path, reference_args: dict | None = None) -> dict:
    m = json.loads((model_dir / "metrics.json").read_text())
    args = m["training"]["args"]
    changed = {k: v for k, v in args.items() if reference_args is not None and k != "out"
               and reference_args.get(k) != v}
    d, o = confusion_summary(m["confusion"])
    return {"variant": variant, "args": json.dumps(changed) if reference_args is not None else "(shipped)",
            "heldout_assets": m["heldout_assets"]["overall"], "diagonal": round(d, 3), "off_diagonal": round(o, 3)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("variants", nargs="+", help="NAME=DIR of a training run with one argument changed")
    a = ap.parse_args(argv)
    path = a.model / "metrics.json"
    metrics = json.loads(path.read_text())
    ref = metrics["training"]["args"]
    rows = [row("ROMA-tiny v2", a.model)]
    for v in a.variants:
        name, _, d = v.partition("=")
        rows.append(row(name, Path(d), ref))
    metrics["ablation"] = rows
    path.write_text(json.dumps(metrics, indent=1) + "\n")
    from roma_ros.training.model_card import write_model_card

    write_model_card(a.model, metrics)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
