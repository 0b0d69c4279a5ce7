"""Training the speak head on cached unit features: weighted BCE, early stopping on validation.

Every annotated task weighs the same, and inside a task its positive and its negative units weigh
the same (half each): a rare event in hours of quiet stream still counts, and a task with many
bags does not drown the others. That is what keeps the base tasks when their bags are mixed in.
The head starts from the checkpoint's head (same variant) or, for another variant, from a seeded
initialisation; the best validation epoch is kept.
"""
from __future__ import annotations

import copy
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch

from roma_ros.engine.speak_head import SpeakHead
from roma_ros.tuning.features import TaskFeatures

VARIANTS = ("same", "mlp", "linear")


@dataclass
class TrainSettings:
    variant: str = "same"  # same (the checkpoint's) | mlp | linear
    epochs: int = 400
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 60  # epochs without a better validation loss before stopping
    batch_size: int = 256
    seed: int = 0


@dataclass
class TrainResult:
    head: SpeakHead
    best_epoch: int
    epochs_run: int
    seconds: float
    history: list[dict] = field(default_factory=list)  # per epoch: train_loss, val_loss


def task_key(f: TaskFeatures) -> tuple[str, str]:
    return (f.task.id, f.task.instruction)


def weighted_units(sets: list[TaskFeatures]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(states (N, K, H), labels (N,), weights (N,) summing to 1) over the scored units."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, f in enumerate(sets):
        groups[task_key(f)].append(i)
    xs, ys, ws = [], [], []
    for members in groups.values():
        y = np.concatenate([sets[i].labels()[sets[i].scored] for i in members])
        x = np.concatenate([sets[i].states[sets[i].scored] for i in members])
        n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
        w = np.where(y > 0, 0.5 / max(n_pos, 1), 0.5 / max(n_neg, 1))
        if n_pos == 0 or n_neg == 0:  # one class only: it takes the task's whole weight
            w = np.full(len(y), 1.0 / max(len(y), 1))
        xs.append(x)
        ys.append(y)
        ws.append(w / len(groups))
    return np.concatenate(xs), np.concatenate(ys).astype(np.float32), np.concatenate(ws).astype(np.float32)


def _loss(head: SpeakHead, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    logits = head.logits(x.transpose(0, 1))  # the head takes (K, N, H)
    return (w * torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")).sum()


def initial_head(base: SpeakHead, variant: str, seed: int) -> SpeakHead:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if variant in ("same", base.variant):
        return copy.deepcopy(base).float().train().requires_grad_(True)
    torch.manual_seed(seed)
    hidden = base.fc1.in_features if base.variant == "mlp" else base.head.in_features
    return SpeakHead(hidden, base.layer_ids, variant).float().train()


def train_head(base: SpeakHead, train: list[TaskFeatures], val: list[TaskFeatures],
               settings: TrainSettings | None = None, progress: bool = False) -> TrainResult:
    s = settings or TrainSettings()
    if not train or not val:
        raise ValueError("training needs training and validation units")
    started = time.perf_counter()
    head = initial_head(base, s.variant, s.seed)
    # fresh tensors (torch's own aligned memory): CPU kernels may round differently on arrays
    # that sit at another alignment, and a run from cached features must equal a fresh one
    x, y, w = (torch.tensor(a) for a in weighted_units(train))
    vx, vy, vw = (torch.tensor(a) for a in weighted_units(val))
    opt = torch.optim.AdamW(head.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    gen = torch.Generator().manual_seed(s.seed)
    with torch.no_grad():
        best_loss, best_state, best_epoch = float(_loss(head, vx, vy, vw)), copy.deepcopy(head.state_dict()), 0
    history = [{"epoch": 0, "train_loss": None, "val_loss": best_loss}]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=s.epochs, desc="training", unit="epoch", dynamic_ncols=True)
    epoch = 0
    for epoch in range(1, s.epochs + 1):
        head.train()
        order = torch.randperm(len(y), generator=gen)
        total = 0.0
        for batch in order.split(s.batch_size):
            opt.zero_grad()
            # the batch's share of the weights, rescaled so every epoch sums to one step per batch
            loss = _loss(head, x[batch], y[batch], w[batch] * (len(y) / len(batch)))
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(batch) / len(y)
        head.eval()
        with torch.no_grad():
            val_loss = float(_loss(head, vx, vy, vw))
        history.append({"epoch": epoch, "train_loss": total, "val_loss": val_loss})
        if val_loss < best_loss - 1e-6:
            best_loss, best_state, best_epoch = val_loss, copy.deepcopy(head.state_dict()), epoch
        if bar is not None:
            bar.update(1)
            bar.set_postfix(val_loss=f"{val_loss:.4f}", best=best_epoch, refresh=False)
        if epoch - best_epoch >= s.patience:
            break
    if bar is not None:
        bar.close()
    head.load_state_dict(best_state)
    head = head.eval().requires_grad_(False)
    return TrainResult(head, best_epoch, epoch, time.perf_counter() - started, history)


def head_probs(head: SpeakHead, f: TaskFeatures) -> np.ndarray:
    """The head's probability for every unit of `f`."""
    with torch.no_grad():
        return head(torch.from_numpy(f.states).transpose(0, 1)).double().numpy()
