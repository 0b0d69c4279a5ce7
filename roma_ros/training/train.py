"""Train ROMA-tiny: `python -m roma_ros.training.train --out roma_ros/models/roma_tiny`.

Reproducible (seeded, fixed step counts, CPU float32), logged to <out>/train_log.txt.
1. Tokenizer (BPE over the task corpus) and a seeded thinker + speak head (model.py); the
   vision and audio towers are pretrained on the domain's classes (towers.py), then frozen.
2. A pool of generated streams (data.py) encoded ONCE by the runtime's own UnitEncoder with the
   frozen towers (exactly the rows inference feeds the LM).
3. Stage 1 (QA / format): LM loss on answers to reactive questions and on narrations, laid out
   as the runtime lays them out (sequence.py).
4. Stage 2 (speak head): weighted BCE (pos_weight 3) on per-unit labels that depend on the
   standing instruction in the prefix (alert conditions, scene-change narration, none), plus the
   LM loss on mixed-in QA.
   Every optimizer step takes `--acc` / `--tasks-per-window` random windows (`--crop` units) of
   the pool streams and trains each under `--tasks-per-window` different instructions: the same
   units with different labels, so the loss can only fall by reading the instruction.
   The last `--long` steps use whole streams so the model also sees long contexts.
5. Checkpoint in ROMA's layout, a parity check (RomaModel.load + the training forward agree on
   p(speak)), held-out metrics with our evaluator (evaluate.py), metrics.json and MODEL_CARD.md.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from roma_ros.training import data, model as tiny  # noqa: E402
from roma_ros.training.sequence import Plan, SequenceBuilder, encode_stream, forward  # noqa: E402

POS_WEIGHT = 3.0


class Log:
    def __init__(self, path: Path | None):
        self.f = open(path, "w") if path else None
        self.t0 = time.perf_counter()

    def __call__(self, msg: str):
        line = f"[{time.perf_counter() - self.t0:7.1f}s] {msg}"
        print(line, flush=True)
        if self.f:
            self.f.write(line + "\n")
            self.f.flush()


ALERT_CONDITIONS = ("cat", "alarm", "help")  # the instructed conditions (person/cup/rocket: distractors, QA)
TASKS = ("cat", "alarm", "help", "change", "compound", "none")
TASK_P = (0.22, 0.22, 0.22, 0.2, 0.09, 0.05)


def sample_task(rng: np.random.Generator) -> str:
    return TASKS[int(rng.choice(len(TASKS), p=TASK_P))]


def sample_plan(stream: data.Stream, rng: np.random.Generator, n_queries: int, task: str | None = None) -> Plan:
    """Instruction, labels, queries and answers for one stream under `task` (random if None)."""
    n = len(stream.units)
    plan = Plan()
    task = task or sample_task(rng)
    if task in ALERT_CONDITIONS:
        conds = [task]
    elif task == "compound":
        conds = list(rng.permutation(ALERT_CONDITIONS)[: int(rng.integers(2, 4))])
    elif task == "change":
        conds = ["change"]
    else:
        conds = []
    if conds == ["change"]:
        plan.instructions = [data.NARRATION_INSTRUCTIONS[int(rng.integers(len(data.NARRATION_INSTRUCTIONS)))]]
        for k in range(n):
            if stream.change[k]:
                plan.answers[k] = data.NARRATION[stream.objects[k]]
    elif conds:
        plan.instructions = [data.alert_instruction(conds, rng)]
    plan.labels = stream.labels(conds) if conds else np.zeros(n, np.float32)
    ok = [k for k in range(1, n - 1) if not stream.change[k] and not stream.change[k + 1]
          and stream.objects[k] == stream.objects[k + 1] and stream.sounds[k] == stream.sounds[k + 1]
          and k not in plan.answers and k + 1 not in plan.answers]
    used: set[int] = set()
    for _ in range(n_queries):
        cand = [k for k in ok if k not in used and k - 1 not in used and k + 1 not in used and k + 2 not in used]
        if not cand:
            break
        k = int(rng.choice(cand))
        used.add(k)
        if rng.uniform() < 0.5:
            plan.queries[k] = data.SEE_QUESTIONS[int(rng.integers(len(data.SEE_QUESTIONS)))]
            plan.answers[k + 1] = data.SEE_ANSWER[stream.objects[k + 1]]
        else:
            plan.queries[k] = data.HEAR_QUESTIONS[int(rng.integers(len(data.HEAR_QUESTIONS)))]
            plan.answers[k + 1] = data.HEAR_ANSWER[stream.sounds[k + 1]]
    return plan


def make_pool(gen: data.StreamGenerator, encoder, n: int, umin: int, umax: int, log: Log):
    focuses = list(ALERT_CONDITIONS) + [None]
    pool = []
    for i in range(n):
        focus = focuses[i % len(focuses)]
        s = gen.stream(int(gen.rng.integers(umin, umax + 1)), focus=focus)
        s.meta["focus"] = focus
        pool.append((s, encode_stream(encoder, s.units)))
        if (i + 1) % 20 == 0:
            log(f"pool {i + 1}/{n}")
    return pool


def crop(item, rng: np.random.Generator, lo: int, hi: int):
    """A random window of lo..hi units of a pool stream (curriculum: short contexts first)."""
    from roma_ros.training.sequence import EncodedStream

    stream, enc = item
    n = len(stream.units)
    k = int(rng.integers(lo, hi + 1))
    if k >= n:
        return item
    a = int(rng.integers(0, n - k + 1))
    b = a + k
    s = data.Stream(stream.units[a:b], stream.objects[a:b], stream.sounds[a:b], [False] + stream.change[a + 1:b],
                    dict(stream.meta))
    return s, EncodedStream(enc.token_ids[a:b], enc.features[a:b], enc.layouts[a:b])


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def parity_check(path: Path, pool_item, builder: SequenceBuilder, thinker, head, rng) -> float:
    """Max |p_train - p_runtime| over a stream: the training forward vs RomaModel.load + ingest."""
    from roma_ros.engine.config import EngineConfig
    from roma_ros.engine.roma import RomaModel

    stream, enc = pool_item
    plan = Plan(instructions=[data.alert_instruction(["cat"])], labels=stream.label("cat"))
    with torch.no_grad():
        gl, _, _ = forward(thinker, head, builder.build(enc, plan))
    p_train = torch.sigmoid(gl).numpy()
    m = RomaModel.load(EngineConfig(model_path=str(path)))
    m.set_instructions(plan.instructions)
    p_rt = np.array([m.ingest(u).prob for u in stream.units])
    return float(np.abs(p_train - p_rt).max())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="roma_ros/models/roma_tiny")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pool", type=int, default=120, help="generated streams (encoded once)")
    ap.add_argument("--units", type=int, nargs=2, default=(16, 36), help="stream length range (units)")
    ap.add_argument("--stage1", type=int, default=60, help="stage-1 steps (QA/format)")
    ap.add_argument("--stage2", type=int, default=2400, help="stage-2 steps (speak head + QA)")
    ap.add_argument("--stage2-queries", type=int, default=2, help="most questions per stage-2 window (0..N, uniform)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--acc", type=int, default=9, help="sequences per optimizer step (windows of the streams)")
    ap.add_argument("--crop", type=int, nargs=2, default=(4, 12), help="window length range (units)")
    ap.add_argument("--long", type=int, default=50, help="last N steps use whole streams")
    ap.add_argument("--acc-long", type=int, default=2, help="whole streams per step in the long phase")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: robust on a shared 2-core machine)")
    ap.add_argument("--eval-seed", type=int, default=9000)
    ap.add_argument("--eval-n", type=int, default=4, help="held-out streams per task")
    ap.add_argument("--no-eval", action="store_true")
    ap.add_argument("--tower-streams", type=int, default=80, help="generated streams (30 units) to pretrain the towers")
    ap.add_argument("--tower-steps", type=int, default=600, help="tower pretraining steps (0: random frozen towers)")
    ap.add_argument("--tasks-per-window", type=int, default=3,
                    help="instructions each window is trained under in one step (contrast teaches the instruction)")
    ap.add_argument("--task-p", type=float, nargs=len(TASKS), default=TASK_P,
                    help=f"how often each task is trained ({' '.join(TASKS)}); normalised")
    a = ap.parse_args(argv)
    task_p = np.asarray(a.task_p, float) / sum(a.task_p)

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    log = Log(out / "train_log.txt")
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    t_start = time.perf_counter()
    log(f"args {vars(a)}; torch {torch.__version__}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cpus, {a.threads} threads")

    from roma_ros.engine.unit_encoder import SpecialIds, UnitEncoder

    tok_json = tiny.build_tokenizer_json()
    tok = tiny.tokenizer_from_json(tok_json)
    thinker, head = tiny.build_model(len(tok), a.seed)
    special = SpecialIds.from_config(thinker.config, tok)
    encoder = UnitEncoder(thinker, special)
    prompt = tiny.prompt_config()
    builder = SequenceBuilder(tok, prompt, special.video, special.audio)
    log(f"vocab {len(tok)}; thinker params {sum(p.numel() for p in thinker.parameters()) / 1e6:.2f} M "
        f"(LM {sum(p.numel() for p in thinker.model.language_model.parameters()) / 1e6:.2f} M)")

    gen = data.StreamGenerator(a.seed + 1, split="train")
    torch.set_num_threads(1)  # small ops: one thread is faster (and does not spin on a busy machine)
    tower_info = {"steps": 0}
    if a.tower_steps > 0:
        from roma_ros.training import towers

        tgen = data.StreamGenerator(a.seed + 2, split="train")
        tset = towers.prepare(encoder, [tgen.stream(30) for _ in range(a.tower_streams)])
        vgen = data.StreamGenerator(a.seed + 3, split="heldout")
        vset = towers.prepare(encoder, [vgen.stream(30) for _ in range(6)])
        tower_info = towers.pretrain(thinker, tset, vset, a.tower_steps, 32, 2e-3, a.seed, log)
        del tset, vset
        log(f"towers pretrained: {tower_info}")
    calib = tiny.calibrate_towers(thinker, encoder, [u for _ in range(6) for u in gen.stream(20).units])
    log(f"towers calibrated: {calib}")
    pool = make_pool(gen, encoder, a.pool, a.units[0], a.units[1], log)
    torch.set_num_threads(a.threads)
    t_pool = time.perf_counter() - t_start
    log(f"pool ready: {sum(len(s.units) for s, _ in pool)} units in {t_pool:.0f}s")

    trainable = list(thinker.model.language_model.parameters()) + list(thinker.lm_head.parameters())
    for p in trainable:
        p.requires_grad_(True)
    head.train().requires_grad_(True)
    thinker.model.language_model.train()
    opt = torch.optim.AdamW([{"params": trainable, "weight_decay": 0.01},
                             {"params": list(head.parameters()), "weight_decay": 0.0}], lr=a.lr, betas=(0.9, 0.98))
    pos_weight = torch.tensor(POS_WEIGHT)
    total = a.stage1 + a.stage2
    ema: dict[str, float] = {}
    for step in range(total):
        stage = 1 if step < a.stage1 else 2
        long_phase = step >= total - a.long
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, a.lr, 30)
        n_seq = a.acc_long if long_phase else a.acc
        opt.zero_grad(set_to_none=True)
        sums = {"lm": 0.0, "gate": 0.0, "acc": 0.0}
        k_tasks = 1 if stage == 1 else max(1, a.tasks_per_window)
        jobs = []
        for _ in range(max(1, n_seq // k_tasks)):
            item = pool[int(rng.integers(len(pool)))]
            if not long_phase:
                item = crop(item, rng, a.crop[0], a.crop[1])
            tasks = rng.choice(len(TASKS), size=k_tasks, replace=False, p=task_p)
            jobs += [(item, TASKS[int(t)]) for t in tasks]
        n_seq = len(jobs)
        for (stream, enc), task in jobs:
            n_queries = int(rng.integers(1, 4)) if stage == 1 else int(rng.integers(0, a.stage2_queries + 1))
            plan = sample_plan(stream, rng, n_queries, task)
            seq = builder.build(enc, plan)
            gate_logits, lm_logits, targets = forward(thinker, head, seq)
            lm_loss = torch.nn.functional.cross_entropy(lm_logits, targets) if lm_logits is not None else torch.zeros(())
            gate_loss = torch.nn.functional.binary_cross_entropy_with_logits(gate_logits, seq.labels,
                                                                             pos_weight=pos_weight)
            loss = lm_loss if stage == 1 else gate_loss + 0.5 * lm_loss
            if loss.requires_grad:  # a stage-1 window without any answer has nothing to learn
                (loss / n_seq).backward()
            with torch.no_grad():
                sums["acc"] += float(((gate_logits > 0).float() == seq.labels).float().mean()) / n_seq
            sums["lm"] += lm_loss.item() / n_seq
            sums["gate"] += gate_loss.item() / n_seq
        torch.nn.utils.clip_grad_norm_(trainable + list(head.parameters()), 1.0)
        opt.step()
        for k, v in sums.items():
            ema[k] = v if k not in ema else 0.9 * ema[k] + 0.1 * v
        if (step + 1) % 20 == 0 or step == total - 1:
            log(f"step {step + 1}/{total} stage {stage}{' long' if long_phase else ''} lr {opt.param_groups[0]['lr']:.2e} "
                f"lm {ema['lm']:.3f} gate {ema['gate']:.3f} unit-acc {ema['acc']:.3f} ({n_seq} seqs, last {len(seq.ids)} tokens)")
    t_train = time.perf_counter() - t_start
    thinker.eval().requires_grad_(False)
    head.eval().requires_grad_(False)
    tiny.write_checkpoint(out, thinker, head, tok_json, prompt)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file() and f.suffix in (".safetensors", ".json"))
    log(f"checkpoint written to {out} ({size / 1e6:.2f} MB); training took {t_train / 60:.1f} min")
    diff = parity_check(out, pool[0], builder, thinker, head, rng)
    log(f"parity: max |p_train - p_runtime| = {diff:.2e}")
    info = {"seed": a.seed, "args": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(a).items()},
            "train_seconds": round(t_train, 1), "pool_seconds": round(t_pool, 1), "parity_max_abs": diff,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {a.threads} threads",
            "checkpoint_bytes": size, "towers": tower_info}
    if not a.no_eval:
        from roma_ros.engine.config import EngineConfig
        from roma_ros.engine.roma import RomaModel
        from roma_ros.training.evaluate import evaluate_model

        t0 = time.perf_counter()
        model = RomaModel.load(EngineConfig(model_path=str(out)))
        metrics = evaluate_model(model, a.eval_seed, a.eval_n, split="train")
        metrics["heldout_assets"] = evaluate_model(model, a.eval_seed + 1, a.eval_n, split="heldout")
        from roma_ros.training.instruction_check import confusion

        metrics["confusion"] = confusion(model, a.eval_seed + 2, split="heldout")
        metrics["eval_seconds"] = round(time.perf_counter() - t0, 1)
        metrics["training"] = info
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
        from roma_ros.training.evaluate import record_regression

        reg = record_regression(out, model)
        log("regression subset: " + json.dumps(reg["overall"]))
        log("held-out: " + json.dumps(metrics["overall"]))
        for k, v in metrics["per_task"].items():
            log(f"  {k}: {json.dumps(v)}")
        from roma_ros.training.model_card import write_model_card

        write_model_card(out, metrics)
    log(f"done in {(time.perf_counter() - t_start) / 60:.1f} min")


if __name__ == "__main__":
    main()
