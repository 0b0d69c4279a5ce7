"""`roma tune BAG... --annotations FILE -o DIR [--val BAG... | --val-split F]`.

Every input is checked before any model work: annotation files against the schema, bags for a
camera or microphone topic, with the evaluator's messages. Then each (bag, task) is replayed once
(features.py, cached), the head is trained (train_head.py), and DIR gets the overlay
`speak_head.safetensors` and `report.{json,md,png}` (report.py). Nothing is written over the base
checkpoint.
"""
from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path

from roma_ros.bagio import BagError
from roma_ros.eval.annotations import AnnotationError, Annotations, load_annotations

OVERLAY_NAME = "speak_head.safetensors"


class TuneInputError(ValueError):
    """Bad command-line input (exit code 2)."""


def pair_annotations(bags: list[Path], files: list[str], what: str) -> list[Annotations]:
    """Validated annotations per bag: one file for all, one per bag, or BAG/annotations.yaml."""
    from roma_ros.eval.evaluate_bags import default_annotations

    if files and len(files) not in (1, len(bags)):
        raise TuneInputError(f"give one {what} file for all bags or one per bag")
    out = []
    for i, bag in enumerate(bags):
        path = Path(files[0] if len(files) == 1 else files[i]) if files else default_annotations(bag)
        if path is None:
            raise TuneInputError(f"{bag}: no annotation file (give {what} or put annotations.yaml in the bag)")
        try:
            ann = load_annotations(path)
        except FileNotFoundError:
            raise TuneInputError(f"no annotation file at {path}") from None
        except (AnnotationError, OSError) as exc:
            raise TuneInputError(str(exc)) from None
        if not ann.tasks:
            raise TuneInputError(f"{path}: no tasks: the head learns from annotated task windows")
        out.append(ann)
    return out


def check_bags(bags: list[Path], topics) -> None:
    from roma_ros.eval.runner import check_bag

    for bag in bags:
        if not bag.exists():
            raise TuneInputError(f"no bag at {bag}")
        try:
            check_bag(bag, topics)
        except BagError as exc:
            raise TuneInputError(f"{bag}: {exc}" if str(bag) not in str(exc) else str(exc)) from None


def split_validation(bags, anns, fraction: float, seed: int):
    if not 0 < fraction < 1:
        raise TuneInputError(f"--val-split must be between 0 and 1, got {fraction}")
    if len(bags) < 2:
        raise TuneInputError("--val-split needs at least 2 bags (one to train on, one to validate)")
    order = list(range(len(bags)))
    random.Random(seed).shuffle(order)
    n_val = min(len(bags) - 1, max(1, round(fraction * len(bags))))
    val = set(order[:n_val])
    pick = lambda keep: ([b for i, b in enumerate(bags) if (i in val) == keep],  # noqa: E731
                         [a for i, a in enumerate(anns) if (i in val) == keep])
    return pick(False), pick(True)


def run_tune(args) -> int:
    try:
        return _run(args)
    except TuneInputError as exc:
        print(f"roma tune: {exc}", file=sys.stderr)
        return 2
    except (BagError, ValueError, OSError) as exc:
        print(f"roma tune: {exc}", file=sys.stderr)
        return 1


def _run(args) -> int:
    from tqdm import tqdm

    from roma_ros.eval.evaluate_bags import replay_settings
    from roma_ros.eval.runner import TopicChoice
    from roma_ros.tuning import report
    from roma_ros.tuning.features import FeatureExtractor
    from roma_ros.tuning.train_head import TrainSettings, head_probs, train_head

    bags = [Path(b) for b in args.bags]
    topics = TopicChoice(args.image_topic, args.audio_topic, args.audio_info_topic)
    for bag in bags + [Path(b) for b in args.val or []]:
        if not bag.exists():
            raise TuneInputError(f"no bag at {bag}")
    anns = pair_annotations(bags, args.annotations, "--annotations")
    if args.val and args.val_split is not None:
        raise TuneInputError("give --val or --val-split, not both")
    if args.val:
        val_bags = [Path(b) for b in args.val]
        val_anns = pair_annotations(val_bags, args.val_annotations, "--val-annotations")
    elif args.val_split is not None:
        (bags, anns), (val_bags, val_anns) = split_validation(bags, anns, args.val_split, args.seed)
    else:
        raise TuneInputError("validation bags are needed to stop training and to report: --val BAG... or --val-split F")
    overlap = {b.resolve() for b in bags} & {b.resolve() for b in val_bags}
    if overlap:
        raise TuneInputError(f"bags both in training and validation: {sorted(map(str, overlap))}")
    check_bags(bags + val_bags, topics)
    out = Path(args.output)
    if (out / OVERLAY_NAME).exists() and not args.force:
        raise TuneInputError(f"{out / OVERLAY_NAME} exists (--force to replace it)")

    overrides = {name: getattr(args, name) for name in ("model_path", "model_profile", "backend", "device", "dtype")
                 if getattr(args, name) is not None}
    overrides["speak_head"] = ""  # features and the "before" scores come from the checkpoint's own head
    params = args.params
    engine_p, sync_p = replay_settings(params, overrides, 0)
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(args.cache_dir) if args.cache_dir else out / "features"
    print(f"roma tune: loading the model ({engine_p('model_path')}, backend {engine_p('backend')})", flush=True)
    extractor = FeatureExtractor(engine_p, sync_p, cache_dir, topics, parameters_digest=_parameters_digest(params, overrides))

    passes = [(bag, task, ann.origin, split) for split, bs, ans in (("train", bags, anns), ("val", val_bags, val_anns))
              for bag, ann in zip(bs, ans) for task in ann.tasks]
    sets = {"train": [], "val": []}
    extracted_units, extract_s, cached = 0, 0.0, 0
    bar = tqdm(total=len(passes), desc="features", unit="pass", dynamic_ncols=True, mininterval=0.5)
    for bag, task, origin, split in passes:
        t0 = time.perf_counter()
        feats, from_cache = extractor.extract(bag, task, origin,
                                              lambda n, s: bar.set_postfix(bag=bag.name, task=task.id, units=n, refresh=False))
        if from_cache:
            cached += 1
        else:
            extract_s += time.perf_counter() - t0
            extracted_units += len(feats.starts)
        sets[split].append(feats)
        bar.update(1)
    bar.close()

    from roma_ros.engine.head_overlay import checkpoint_head, save_overlay

    base = checkpoint_head(extractor.model)
    settings = TrainSettings(variant=args.variant, epochs=args.epochs, lr=args.lr, patience=args.patience, seed=args.seed)
    val = sets["val"]
    applies = None if args.scope == "all" else sorted({f.task.instruction for f in sets["train"]})
    # early stopping looks at the tasks the head will decide for
    val_decided = [f for f in val if applies is None or f.task.instruction in applies]
    if not val_decided:
        raise TuneInputError("no validation bag has a task with a trained instruction: nothing to stop training on")
    result = train_head(base, sets["train"], val_decided, settings, progress=True)
    before = [f.base_probs for f in val]
    # the overlay decides for its instructions only (scope "tasks"): other tasks keep the base head
    after = [head_probs(result.head, f) if applies is None or f.task.instruction in applies else f.base_probs
             for f in val]
    tasks = report.compare(val, before, after)

    model = extractor.model
    stream_s = sum(float(f.ends.max() - f.starts.min()) for f in sets["train"] + val)
    cache_bytes = sum(f.states.nbytes for f in sets["train"] + val)
    meta = {"base_model": str(model.config.model_path), "profile": model.model_profile.name,
            "tasks": ", ".join(sorted({f"{f.task.id}" for f in sets["train"]})),
            "applies_to": "*" if applies is None else applies,
            "recommended": {k: t["recommended"] for k, t in tasks.items()},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "settings": asdict(settings)}
    overlay = save_overlay(out / OVERLAY_NAME, result.head, extractor.fingerprint, meta)
    doc = {
        "overlay": str(overlay), "applies_to": "*" if applies is None else applies,
        "base": {"model_path": str(model.config.model_path), "fingerprint": extractor.fingerprint,
                 "profile": model.model_profile.name, "head_variant": base.variant},
        "training": {"train_sets": len(sets["train"]), "val_sets": len(val),
                     "train_units": int(sum(f.scored.sum() for f in sets["train"])),
                     "val_units": int(sum(f.scored.sum() for f in val)),
                     "train_bags": [str(b) for b in bags], "val_bags": [str(b) for b in val_bags],
                     "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "seconds": result.seconds,
                     "settings": asdict(settings), "history": result.history},
        "cost": {"extracted_units": extracted_units, "extraction_s": extract_s,
                 "extraction_ms_per_unit": 1e3 * extract_s / extracted_units if extracted_units else None,
                 "passes_from_cache": cached, "training_s": result.seconds,
                 "feature_bytes_per_stream_hour": cache_bytes / (stream_s / 3600) if stream_s > 0 else None},
        "tasks": tasks,
    }
    report.write(out, doc, val, before, after)
    print(report.markdown(doc))
    print(f"roma tune: wrote {overlay} and {out / 'report.md'} (load it with speak_head:={overlay})")
    return 0


def _parameters_digest(params: str, overrides: dict) -> str:
    """The parameter file's content and the options over it (they change the units and the states)."""
    import hashlib

    h = hashlib.sha256(Path(params).read_bytes())
    h.update(json.dumps(overrides, sort_keys=True).encode())
    return h.hexdigest()
