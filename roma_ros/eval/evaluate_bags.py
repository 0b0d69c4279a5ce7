"""`roma eval`: evaluate bags against annotations, several bags in parallel processes."""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from roma_ros.core.triggers import TriggerRule
from roma_ros.eval.annotations import AnnotationError, Annotations, load_annotations
from roma_ros.eval.metrics import effective_rule, evaluate
from roma_ros.eval.report import write_outputs, write_summary
from roma_ros.eval.runner import BagError, RunOptions, TopicChoice, run_bag
from roma_ros.params import node_parameters


@dataclass
class EvalJob:
    bag: str
    annotations: str | None
    params: str
    out_dir: str
    topics: TopicChoice
    engine_overrides: dict
    threads: int  # model threads unless the parameters set them; 0 = the engine's automatic count
    compare_head: str = ""  # "base" or an overlay: also score the bag with that speak head


def default_annotations(bag: Path) -> Path | None:
    for candidate in (bag / "annotations.yaml", bag / "annotations.json",
                      bag.with_suffix(".yaml"), bag.with_suffix(".json")):
        if candidate.is_file():
            return candidate
    return None


def replay_settings(params: str, engine_overrides: dict, threads: int):
    """(engine_p, sync_p): parameter lookups of the nodes' YAML `params` for an offline replay, with
    `engine_overrides` on top; `threads` is the model's thread count unless the file sets one."""
    from roma_ros.pipeline.engine import PARAMETERS as ENGINE_PARAMETERS
    from roma_ros.pipeline.synchronizer import PARAMETERS as SYNC_PARAMETERS

    sync_p = node_parameters(params, "synchronizer", SYNC_PARAMETERS)
    engine_values = node_parameters(params, "engine", ENGINE_PARAMETERS)

    def engine_p(name: str):
        if name in engine_overrides:
            return engine_overrides[name]
        if name == "max_query_lead":  # the annotations' questions are all scheduled before the replay
            return 0.0
        if name == "threads":
            return int(engine_values(name)) or threads
        return engine_values(name)
    return engine_p, sync_p


def pipeline_factory(sync_p, session):
    """build_pipeline() for run_bag: the node's SynchronizerPipeline, sizing frames as the
    session's model profile wants."""
    from roma_ros.pipeline.synchronizer import SynchronizerPipeline, synchronizer_settings

    sizing = getattr(getattr(session, "model", None), "model_profile", None)
    sizing = sizing.frames if sizing is not None else None

    def build_pipeline():
        config, fallback = synchronizer_settings(sync_p, sizing)
        return SynchronizerPipeline(config, fallback, format_source=str(sync_p("audio.format_source")))
    return build_pipeline


def _evaluate_one(job: EvalJob, progress_queue=None) -> dict:
    """Runs in a worker process: load everything, replay, score, write the bag's outputs."""
    from roma_ros.pipeline.engine import build_session

    engine_p, sync_p = replay_settings(job.params, job.engine_overrides, job.threads)
    annotations = load_annotations(job.annotations) if job.annotations else Annotations()
    default_rule = TriggerRule(float(engine_p("default_task.threshold")), int(engine_p("default_task.window")),
                               float(engine_p("default_task.cooldown")))
    session = build_session(engine_p)
    build_pipeline = pipeline_factory(sync_p, session)

    name = Path(job.bag).name

    def progress(units: int, stream_s: float) -> None:
        if progress_queue is not None:
            progress_queue.put((name, units, stream_s))

    states, on_unit, other = [], None, None
    if job.compare_head:
        from roma_ros.engine.head_overlay import comparison_head

        other, label, applies = comparison_head(job.compare_head, session.model)

        def on_unit(_unit, _step):
            states.append(session.model.anchor_states.detach().float().cpu())
    result = run_bag(Path(job.bag), build_pipeline, session, annotations, default_rule,
                     RunOptions(topics=job.topics, on_unit=on_unit), progress)
    result.meta["speak_head"] = getattr(session.model, "speak_head_source", "checkpoint")
    rules = {t.id: effective_rule(t, default_rule) for t in annotations.tasks}
    metrics = evaluate(result, annotations, rules=rules)
    metrics["speak_head"] = result.meta["speak_head"]
    if other is not None:
        metrics["compare"] = _compare(result, states, other, label, applies, annotations, rules,
                                      Path(job.out_dir) / result.name / "compare")
    write_outputs(Path(job.out_dir) / result.name, result, metrics, annotations)
    return metrics


def _compare(result, states, head, label: str, applies, annotations, rules, out_dir: Path) -> dict:
    """The same replay scored with another speak head (on the same per-unit layer states), its
    outputs in `out_dir`; returns {head, overall, tasks: success and false alarms}. A head that
    decides only for some instructions (`applies`) replaces the probabilities of those tasks; the
    other tasks keep this run's checkpoint-head probabilities."""
    import torch

    from roma_ros.eval.metrics import rescored

    with torch.no_grad():
        probs = head(torch.cat(states, dim=1)).double().tolist() if states else []
    if applies is None:
        other = rescored(result, probs, annotations, rules)
    else:
        own = {t.id: probs for t in annotations.tasks if t.instruction in applies}
        other = rescored(result, [u.prob for u in result.units], annotations, rules, task_probs=own)
    other_metrics = evaluate(other, annotations, rules=rules)
    write_outputs(out_dir, other, other_metrics, annotations)
    tasks = {tid: {"success": t.get("success", {}).get("rate") if "success" in t else
                   (t.get("narration") or {}).get("f1"),
                   "false_alarms_per_hour": (t.get("false_alarms") or {}).get("per_hour")}
             for tid, t in other_metrics["tasks"].items()}
    return {"head": label, "overall": other_metrics["overall"],
            "tasks": tasks, "outputs": str(out_dir)}


def run_eval(bags: list[str], annotations: list[str], params: str, out_dir: str, topics: TopicChoice,
             engine_overrides: dict, jobs: int, compare_head: str = "") -> int:
    bag_paths = [Path(b) for b in bags]
    for bag in bag_paths:
        if not bag.exists():
            print(f"roma eval: no bag at {bag}", file=sys.stderr)
            return 1
    if annotations and len(annotations) not in (1, len(bags)):
        print("roma eval: give one --annotations file for all bags or one per bag", file=sys.stderr)
        return 1
    per_bag = [(annotations[0] if len(annotations) == 1 else annotations[i]) if annotations
               else default_annotations(bag) for i, bag in enumerate(bag_paths)]
    for path in filter(None, per_bag):
        try:
            load_annotations(path)  # validate before spending minutes on the model
        except FileNotFoundError:
            print(f"roma eval: no annotation file at {path}", file=sys.stderr)
            return 2
        except (AnnotationError, OSError) as exc:
            print(f"roma eval: {exc}", file=sys.stderr)
            return 2
    jobs = max(1, min(jobs, len(bags)))
    # One bag at a time: the node's own thread count (`threads`, 0 = auto), so the scores equal the
    # live graph's to the last digit (float sums depend on it). Several: a share of the cores each.
    from roma_ros.engine.factory import auto_threads

    threads = 0 if jobs == 1 else max(1, min(auto_threads(), (os.cpu_count() or 1) // jobs))
    if compare_head and compare_head != "base" and not Path(compare_head).is_file():
        print(f"roma eval: --compare-head: no overlay file at {compare_head} (or give 'base')", file=sys.stderr)
        return 2
    work = [EvalJob(str(bag), str(ann) if ann else None, params, out_dir, topics, engine_overrides, threads,
                    compare_head)
            for bag, ann in zip(bag_paths, per_bag)]
    engine_p, _ = replay_settings(params, engine_overrides, 0)
    print(f"roma eval: {len(work)} bag(s); each process loads the model {engine_p('model_path')} "
          f"({engine_p('backend')}, {engine_p('device')}) before replaying", flush=True)
    created = not Path(out_dir).exists()
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    results, failures = _run_jobs(work, jobs)
    if not results and created and not any(Path(out_dir).iterdir()):
        Path(out_dir).rmdir()  # every bag failed: leave nothing behind
    for bag, message in failures:
        where = "" if str(bag) in message else f"{bag}: "  # the path once per line
        print(f"roma eval: {where}{message}", file=sys.stderr)
    if results:
        write_summary(out_dir, results)
    return 1 if failures else 0


def _run_jobs(work: list[EvalJob], jobs: int, retry_crashed: bool = True) -> tuple[list[dict], list[tuple[str, str]]]:
    from tqdm import tqdm

    context = mp.get_context("spawn")  # torch and rclpy state must not be forked
    manager = context.Manager()
    progress_queue = manager.Queue()
    bar = tqdm(desc="units", unit="unit", dynamic_ncols=True)
    stream = {}
    started = time.perf_counter()
    results, failures, crashed = [], [], []
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = {pool.submit(_evaluate_one, job, progress_queue): job for job in work}
        pending = set(futures)
        while pending:
            try:
                name, units, stream_s = progress_queue.get(timeout=0.2)
                stream[name] = (units, stream_s)
                total_units = sum(u for u, _ in stream.values())
                total_stream = sum(s for _, s in stream.values())
                bar.n = total_units
                bar.set_postfix(speed=f"{total_stream / max(time.perf_counter() - started, 1e-9):.2f}x real time",
                                refresh=False)
                bar.refresh()
            except queue.Empty:
                pass
            for future in [f for f in pending if f.done()]:
                pending.discard(future)
                job = futures[future]
                try:
                    results.append(future.result())
                except (BagError, AnnotationError, FileNotFoundError, ValueError) as exc:
                    failures.append((job.bag, str(exc)))
                except BrokenProcessPool:
                    crashed.append(job)
                except Exception as exc:  # keep the other bags' results
                    failures.append((job.bag, f"{type(exc).__name__}: {exc}"))
    bar.close()
    manager.shutdown()
    if crashed and retry_crashed:
        # A worker that dies (a crash in native code) takes every bag still in the pool with it;
        # run those again one by one, so only the bag that really crashes is reported.
        for job in crashed:
            more, failed = _run_jobs([job], 1, retry_crashed=False)
            results += more
            failures += failed
    else:
        failures += [(job.bag, "the evaluation process crashed (killed by a signal) on this bag")
                     for job in crashed]
    return results, failures
