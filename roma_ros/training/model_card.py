"""Writes MODEL_CARD.md from metrics.json (filled in by train.py)."""
from __future__ import annotations

import json
from pathlib import Path


def _f(x, nd=3):
    return "-" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def _table(metrics: dict) -> str:
    rows = [("all", metrics["overall"])] + list(metrics.get("per_task", {}).items())
    return "\n".join(
        f"| {name} | {_f(m['alert_success_rate_pa'])} ({m['alert_events']}) | {_f(m['false_alarms_per_minute'])} | "
        f"{_f(m['median_detection_delay_s'], 1)} | {_f(m['narration_f1'])} | {_f(m['qa_accuracy'])} ({m['qa_questions']}) |"
        for name, m in rows)


def _ablation(rows: list[dict]) -> str:
    """rows: {"variant", "args", "heldout_assets": overall, "diagonal", "off_diagonal"}."""
    if not rows:
        return "(not measured)"
    out = ["| variant | changed arguments | PA | false alarms / min | QA | confusion diagonal | off-diagonal |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        o = r["heldout_assets"]
        out.append(f"| {r['variant']} | `{r['args']}` | {_f(o['alert_success_rate_pa'])} | "
                   f"{_f(o['false_alarms_per_minute'])} | {_f(o['qa_accuracy'])} | {_f(r['diagonal'])} | "
                   f"{_f(r['off_diagonal'])} |")
    return "\n".join(out)


def write_model_card(out: str | Path, metrics: dict | None = None) -> Path:
    out = Path(out)
    if metrics is None:
        metrics = json.loads((out / "metrics.json").read_text())
    tr = metrics.get("training", {})
    o = metrics["overall"]
    table = _table(metrics)
    held = metrics.get("heldout_assets")
    heldout_table = _table(held) if held else "(not measured)"
    from roma_ros.training.instruction_check import markdown

    confusion = markdown(metrics["confusion"]) if "confusion" in metrics else "(not measured)"
    towers = tr.get("towers", {})
    tower_text = (f"vision {_f(towers['heldout']['vision_acc'])}, audio {_f(towers['heldout']['audio_acc'])} on "
                  f"{towers['heldout']['units']} held-out-asset units ({_f(towers.get('seconds', 0), 0)} s)"
                  if towers.get("heldout") else "towers not pretrained")
    ablation = _ablation(metrics.get("ablation", []))
    rules = metrics.get("rules", {})
    template = (Path(__file__).parent / "MODEL_CARD.template.md").read_text()
    text = template.format(
        train_min=_f(tr.get("train_seconds", 0) / 60, 1), pool_s=_f(float(tr.get("pool_seconds") or 0), 0), seed=tr.get("seed"),
        machine=tr.get("machine", "?"), args=json.dumps(tr.get("args", {})), size_mb=_f(tr.get("checkpoint_bytes", 0) / 1e6, 2),
        parity=f"{tr.get('parity_max_abs', float('nan')):.1e}", eval_seed=metrics["seed"], eval_n=metrics["n_per_task"],
        eval_units=metrics["n_units"], streams=o["streams"], table=table,
        alert_rule=json.dumps(rules.get("alert")), narration_rule=json.dumps(rules.get("narration")),
        heldout_table=heldout_table, heldout_seed=(held or {}).get("seed", "-"), confusion=confusion,
        confusion_seed=metrics.get("confusion", {}).get("seed", "-"), towers=tower_text, ablation=ablation,
    )
    (out / "MODEL_CARD.md").write_text(text)
    return out / "MODEL_CARD.md"


if __name__ == "__main__":
    import sys

    print(write_model_card(sys.argv[1] if len(sys.argv) > 1 else "roma_ros/models/roma_tiny"))
