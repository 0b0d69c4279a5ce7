"""Pretraining ROMA-tiny's vision and audio towers on the domain's classes.

ROMA freezes *pretrained* encoders: their features already separate what matters (a cat from a
person, an alarm from music, "help" from other words), so the language model only has to learn
when the instruction makes them matter. Frozen random towers of this size do not separate those
classes well enough, which left the first ROMA-tiny deaf and instruction-blind. Here each tower
is trained (supervised, on generated units of the training asset split) with a linear probe on
its mean-pooled output tokens: vision on the visible object (or none), audio on the sound class.
The probes are thrown away; the towers are then frozen, exactly as ROMA uses its encoders.

The inputs are prepared by the runtime's own UnitEncoder (frame fitting, patchify, audio
conditioning, log-mel), so the towers learn on exactly what inference feeds them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from roma_ros.training import data

VISION_CLASSES = (None, *data.OBJECTS)
SOUND_CLASSES = data.SOUNDS


@dataclass
class TowerSet:
    """Prepared tower inputs for a set of units."""

    pixels: list[torch.Tensor]  # per unit (patches, 3*tp*p*p)
    grids: list[tuple[int, int, int]]
    mels: torch.Tensor  # (units, n_mels, 100)
    objects: torch.Tensor  # (units,) index into VISION_CLASSES
    sounds: torch.Tensor  # (units,) index into SOUND_CLASSES


def prepare(encoder, streams: list[data.Stream]) -> TowerSet:
    pixels, grids, mels, objs, snds = [], [], [], [], []
    for s in streams:
        encoder.reset()
        for u, o, snd in zip(s.units, s.objects, s.sounds):
            px, grid = encoder.patchify(encoder.select_frames(list(u.frames)))
            pixels.append(px.cpu())
            grids.append(grid)
            mels.append(torch.from_numpy(encoder.audio_features(u.audio, u.sample_rate)))
            objs.append(VISION_CLASSES.index(o))
            snds.append(SOUND_CLASSES.index(snd))
    return TowerSet(pixels, grids, torch.stack(mels), torch.tensor(objs), torch.tensor(snds))


def video_pooled(thinker, pixels: list[torch.Tensor], grids: list[tuple[int, int, int]]) -> torch.Tensor:
    """(batch, H): mean of each unit's merged video tokens."""
    out = thinker.model.get_video_features(torch.cat(pixels), torch.tensor(grids), return_dict=True).pooler_output
    return torch.stack([t.mean(0) for t in out])


def audio_pooled(thinker, mels: torch.Tensor) -> torch.Tensor:
    """(batch, H): mean of each unit's audio tokens."""
    mask = torch.ones(mels.shape[0], mels.shape[2], dtype=torch.long)
    h = thinker.model.get_audio_features(mels, mask, return_dict=True).last_hidden_state
    return h.view(mels.shape[0], -1, h.shape[-1]).mean(1)


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(-1) == labels).float().mean())


def evaluate_towers(thinker, probes, val: TowerSet, batch: int = 32) -> dict:
    """Probe accuracy per tower on a prepared set."""
    v_probe, a_probe = probes
    v_hits = a_hits = 0.0
    n = len(val.pixels)
    with torch.no_grad():
        for i in range(0, n, batch):
            sl = slice(i, min(n, i + batch))
            v_hits += _accuracy(v_probe(video_pooled(thinker, val.pixels[sl], val.grids[sl])), val.objects[sl]) * (sl.stop - sl.start)
            a_hits += _accuracy(a_probe(audio_pooled(thinker, val.mels[sl])), val.sounds[sl]) * (sl.stop - sl.start)
    return {"vision_acc": round(v_hits / n, 4), "audio_acc": round(a_hits / n, 4), "units": n}


def pretrain(thinker, train: TowerSet, val: TowerSet | None, steps: int, batch: int, lr: float,
             seed: int, log=print) -> dict:
    """Train both towers with linear probes (cross-entropy); returns the probes' accuracies."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    hidden = thinker.config.text_config.hidden_size
    v_probe = torch.nn.Linear(hidden, len(VISION_CLASSES))
    a_probe = torch.nn.Linear(hidden, len(SOUND_CLASSES))
    towers = [thinker.model.visual, thinker.model.audio_tower]
    params = [p for t in towers for p in t.parameters()] + list(v_probe.parameters()) + list(a_probe.parameters())
    for t in towers:
        t.train().requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    n = len(train.pixels)
    t0 = time.perf_counter()
    ema = {}
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 20) * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * step / steps)))
        idx = rng.choice(n, size=min(batch, n), replace=False)
        v = video_pooled(thinker, [train.pixels[i] for i in idx], [train.grids[i] for i in idx])
        a = audio_pooled(thinker, train.mels[idx])
        lv = torch.nn.functional.cross_entropy(v_probe(v), train.objects[idx])
        la = torch.nn.functional.cross_entropy(a_probe(a), train.sounds[idx])
        opt.zero_grad(set_to_none=True)
        (lv + la).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        for k, x in (("vision", lv.item()), ("audio", la.item())):
            ema[k] = x if k not in ema else 0.9 * ema[k] + 0.1 * x
        if (step + 1) % 50 == 0 or step == steps - 1:
            log(f"towers step {step + 1}/{steps} loss vision {ema['vision']:.3f} audio {ema['audio']:.3f} "
                f"({time.perf_counter() - t0:.0f}s)")
    for t in towers:
        t.eval().requires_grad_(False)
    out = {"steps": steps, "batch": batch, "seconds": round(time.perf_counter() - t0, 1)}
    if val is not None:
        out["heldout"] = evaluate_towers(thinker, (v_probe, a_probe), val)
    out["train"] = evaluate_towers(thinker, (v_probe, a_probe),
                                   TowerSet(train.pixels[:256], train.grids[:256], train.mels[:256],
                                            train.objects[:256], train.sounds[:256]))
    return out
