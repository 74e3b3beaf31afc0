"""The one training loop of the book, and prediction.

:func:`train` runs every supervised stage (teachers, students, probes): it owns the optimiser, the
learning-rate schedule (:func:`lr_at`), the batch order, bf16 autocast on CUDA, DDP under
``torchrun``, per-epoch evaluation with best-epoch selection, and resumable checkpoints. What a
step computes is the caller's ``step_loss(net, idx, generator)``: it gets the indices of its
training examples and returns a scalar loss, so the loop never sees the data. A loss that is not
finite stops the run. The loop's steps are functions of their own: one epoch (:func:`_train_epoch`),
evaluation and selection (:func:`_evaluate`, :func:`_select`), checkpointing (:func:`_save`,
:func:`_resume`).

:func:`fit` and :func:`predict` are the Quick tour's small front ends (in-memory tensors,
cross-entropy); :func:`predict_logits` runs a model over ``n`` examples in order.

Shapes: N training examples, B batch size, b = this rank's share of a batch (B / world), C classes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import pickle
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

__all__ = ["Recipe", "lr_at", "train", "predict_logits", "fit", "predict"]

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
SCHEDULES = ("constant", "warmup_linear", "cosine_restarts")


@dataclass(frozen=True)
class Recipe:
    """How to train: optimiser, schedule, epochs and batches. See :func:`lr_at` for the schedules.

    ``steps_per_epoch=None``: an epoch is one pass over the N examples in ceil(N / B) batches (the
    last one may be smaller). An int: an epoch is exactly that many batches of B, cut from a stream
    of reshuffled passes (a batch may straddle two passes), whatever N is."""

    epochs: int
    batch_size: int
    lr: float
    optimizer: str = "adamw"  # "adam" | "adamw"
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    schedule: str = "constant"  # "constant" | "warmup_linear" | "cosine_restarts"
    warmup_epochs: float = 0.0  # warmup_linear: rise to lr over this many epochs,
    final_lr_ratio: float = 1.0  # then linear decay to lr * final_lr_ratio at the last step
    restart_epochs: int = 10  # cosine_restarts: T_0 (epochs)
    restart_mult: int = 2  # cosine_restarts: T_mult
    steps_per_epoch: int | None = None  # None: one pass per epoch; int: a fixed number of batches
    amp: bool = True  # bf16 autocast on CUDA; ignored on the CPU

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"Recipe: {name} must be >= 1, got {getattr(self, name)!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):  # 0 trains nothing; NaN and inf ruin every weight
            raise ValueError(f"Recipe: lr (the learning rate) must be a finite number > 0, got {self.lr!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"Recipe: optimizer {self.optimizer!r} is not one of {sorted(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"Recipe: schedule {self.schedule!r} is not one of {SCHEDULES}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"Recipe: steps_per_epoch must be None or >= 1, got {self.steps_per_epoch}")
        if self.restart_epochs < 1 or self.restart_mult < 1:
            raise ValueError("Recipe: restart_epochs and restart_mult must be >= 1")


def bf16_autocast(device: torch.device) -> bool:
    """Whether the recipes autocast to bf16 on ``device``: on a CUDA device that has bf16, else fp32."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def lr_at(recipe: Recipe, step: int, steps_per_epoch: int) -> float:
    """Learning-rate multiplier (of ``recipe.lr``) for optimiser step ``step`` (0-based) when an
    epoch has ``steps_per_epoch`` steps; total = epochs * steps_per_epoch steps.

    - constant: 1.
    - warmup_linear: W = round(warmup_epochs * steps_per_epoch) warm-up steps with (step + 1) / W
      (from 1/W up to 1 at step W - 1), then linear from 1 at step W to ``final_lr_ratio`` at the
      last step (total - 1).
    - cosine_restarts: torch's ``CosineAnnealingWarmRestarts`` (eta_min 0) at the fractional epoch
      e = step / steps_per_epoch: (1 + cos(pi * T_cur / T_i)) / 2, with T_i = T_0, T_0 T_mult, ...
      epochs, restarting (multiplier 1) at T_0, T_0 (1 + T_mult), ... epochs.
    """
    if recipe.schedule == "constant":
        return 1.0
    if recipe.schedule == "warmup_linear":
        total = recipe.epochs * steps_per_epoch
        warm = round(recipe.warmup_epochs * steps_per_epoch)
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total - 1 - warm))
        return 1.0 + (recipe.final_lr_ratio - 1.0) * t
    # cosine_restarts: find the cycle [start, start + period) that holds e
    e = step / steps_per_epoch
    start, period = 0.0, float(recipe.restart_epochs)
    while e >= start + period:
        start, period = start + period, period * recipe.restart_mult
    return 0.5 * (1.0 + math.cos(math.pi * (e - start) / period))


def with_passes(recipe: Recipe, n_train: int, passes: float) -> Recipe:
    """``recipe`` lengthened, when it has a fixed ``steps_per_epoch``, so that its whole schedule sees
    at least ``passes`` passes over ``n_train`` examples: steps_per_epoch becomes
    max(steps_per_epoch, ceil(passes * n_train / (epochs * batch_size))). The ``ci`` profile uses it to
    give a large split the steps it needs without lengthening the small ones (which already see many)."""
    if recipe.steps_per_epoch is None or passes <= 0:
        return recipe
    need = math.ceil(passes * n_train / (recipe.epochs * recipe.batch_size))
    return dataclasses.replace(recipe, steps_per_epoch=max(recipe.steps_per_epoch, need))


# ------------------------------------------------------------------------------------ helpers

def _dist() -> tuple[int, int]:
    """(rank, world size); (0, 1) without torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _fingerprint(recipe: Recipe, n_train: int, seed: int, key: str) -> str:
    """Hash of what makes a run: a checkpoint with another fingerprint belongs to another run."""
    text = repr((sorted(dataclasses.asdict(recipe).items()), int(n_train), int(seed), str(key)))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _augment_seed(seed: int, rank: int) -> int:
    """Seed of the augmentation generator of ``rank``: derived from ``seed``, different from the
    batch-order generator's (which is ``seed`` itself) and from every other rank's."""
    return int.from_bytes(hashlib.sha256(f"augment {seed} {rank}".encode()).digest()[:7], "little")


def _epoch_batches(n: int, recipe: Recipe, order: torch.Generator, carry: torch.Tensor):
    """This epoch's batches (a list of LongTensors of indices, each up to B long) and the indices
    left over for the next epoch (``carry``, used only with a fixed ``steps_per_epoch``)."""
    B = recipe.batch_size
    if recipe.steps_per_epoch is None:
        return list(torch.randperm(n, generator=order).split(B)), carry
    batches = []
    for _ in range(recipe.steps_per_epoch):
        while len(carry) < B:
            carry = torch.cat([carry, torch.randperm(n, generator=order)])
        batches.append(carry[:B])
        carry = carry[B:]
    return batches, carry


def _rng_state(aug: torch.Generator) -> dict:
    """This process's random states: the augmentation generator and torch's global generators
    (dropout and the like draw from those)."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"augment": aug.get_state(), "torch": torch.get_rng_state(), "cuda": cuda}


def _set_rng_state(state: dict, aug: torch.Generator) -> None:
    aug.set_state(state["augment"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _cpu_state(model: nn.Module) -> dict:
    """A detached CPU copy of the model's state_dict."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


CHECKPOINT_KEYS = {"fingerprint", "model", "optimizer", "scheduler", "order", "carry", "rng", "history",
                   "best_epoch", "best_state"}


def _load(path: Path) -> dict:
    """Read a checkpoint of :func:`train` (plain containers and tensors: weights_only works); a clear
    error naming the file, and the way out, when it is damaged."""
    way_out = f"delete {path} to start this run again from its first epoch"
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # objects that are not tensors and plain containers: never loaded
        raise RuntimeError(f"{path}: this interrupted run's checkpoint holds objects that are not plain data, "
                           f"which train() never writes; {way_out}") from err
    except Exception as err:  # truncated, empty, not a torch file
        raise RuntimeError(f"{path}: cannot read this interrupted run's checkpoint "
                           f"({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else 'no detail'}); "
                           f"{way_out}") from err
    if not isinstance(ck, dict) or not CHECKPOINT_KEYS <= set(ck):
        missing = sorted(CHECKPOINT_KEYS - set(ck)) if isinstance(ck, dict) else ["(not a dict)"]
        raise RuntimeError(f"{path}: not a checkpoint of asc_lib.train.train (missing {', '.join(missing)}); {way_out}")
    return ck


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


# ------------------------------------------------------------------------------------- train

def train(model: nn.Module, step_loss, n_train: int, recipe: Recipe, *, device, seed: int, evaluate=None,
          select: str | None = None, mode: str = "max", workdir: Path | None = None, key: str = "", params=None,
          desc: str = "training", log=print, progress: bool = True) -> dict:
    """Train ``model`` in place on ``n_train`` examples with ``recipe``; return its history.

    Every step draws a batch of B indices (shuffled by a CPU generator seeded with ``seed``, the
    same on every rank), keeps this rank's share ``idx = batch[rank::world]`` (b indices) and calls
    ``step_loss(net, idx, generator) -> scalar loss``: ``net`` is the model on ``device`` in train
    mode (wrapped in DistributedDataParallel under ``torchrun``), ``generator`` a CPU generator for
    augmentation, seeded from ``seed`` and the rank. Under ``device.type == "cuda"`` and
    ``recipe.amp`` the call runs under bf16 autocast. Then backward, optimiser step (``params``,
    default every parameter of ``model`` that requires grad) and scheduler step (:func:`lr_at`,
    stepped per batch). Under DDP a batch with fewer than ``world`` examples is skipped (the
    scheduler still steps). A NaN or infinite loss stops the run before it reaches the weights: a
    ``FloatingPointError`` names the run (``desc``, ``key``), the epoch and the step, and the run's
    checkpoint is deleted. The run owns its randomness: torch's global generators (dropout draws from
    them) are seeded from ``seed`` and the rank, and restored afterwards, so a run gives the same
    result whatever ran before it in the process.

    After each epoch ``evaluate(model) -> {name: float}`` (if given) runs on the plain model in
    eval mode under ``no_grad`` on every rank (rank 0's values are broadcast and kept). The history
    entry is ``{"epoch" (1-based), "loss" (mean over the epoch's examples, all ranks), "lr" (at the
    epoch's last step, first parameter group), "seconds" (since the start), **metrics}``; rank 0
    logs it in one line through ``log``. The best epoch is the first maximum (``mode="min"``:
    minimum) of ``metrics[select]`` (the last epoch when ``select`` is None); at the end the model holds its
    weights and is in eval mode.

    With ``workdir``, rank 0 writes ``workdir/last.pt`` after every epoch (atomically): model,
    optimiser, scheduler, the batch-order and every rank's random states, the history, the best
    epoch's weights and a fingerprint of (recipe, n_train, seed, key). A later call with the same
    fingerprint resumes after the last finished epoch, and gives exactly what an uninterrupted run
    gives; one with another fingerprint starts afresh and overwrites it.

    Returns ``{"history": [entry, ...], "best_epoch": int, "best": entry of the best epoch}``.
    """
    device = torch.device(device)
    rank, world = _dist()
    if select is not None and evaluate is None:
        raise ValueError(f"train: select={select!r} needs an evaluate function")
    if mode not in ("max", "min"):
        raise ValueError(f"train: mode must be 'max' or 'min', got {mode!r}")
    if n_train < world:
        raise ValueError(f"train: {n_train} training examples for {world} processes")
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(_augment_seed(seed, -1 - rank))  # -1 - rank: not any rank's augment seed
        run = _start(model, n_train, recipe, device=device, seed=seed, key=key, desc=desc, params=params,
                     workdir=workdir)
        if run.checkpoint is not None and run.checkpoint.exists():
            _resume(run)
        _epochs(run, step_loss, evaluate, select, 1 if mode == "max" else -1, log, progress)
        if run.best_state is not None:  # else the last epoch is the best, and the model holds it
            model.load_state_dict(run.best_state)
        model.eval()
        return {"history": run.history, "best_epoch": run.best_epoch, "best": run.history[run.best_epoch - 1]}


@dataclass
class _Run:
    """A run of :func:`train`: what it trains with, and the state it carries from epoch to epoch (what its
    checkpoint holds)."""

    desc: str
    key: str
    recipe: Recipe
    n_train: int
    device: torch.device
    rank: int
    world: int
    model: nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    spe: int  # steps per epoch
    order: torch.Generator  # batch order: the same on every rank
    aug: torch.Generator  # augmentation: this rank's own
    fingerprint: str
    checkpoint: Path | None  # workdir/last.pt
    carry: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))  # drawn, not used yet
    history: list = field(default_factory=list)
    best_epoch: int | None = None
    best_state: dict | None = None  # the best epoch's weights (None: the last epoch's, which the model holds)


def _start(model, n_train, recipe, *, device, seed, key, desc, params, workdir) -> _Run:
    """A fresh run: ``model`` on ``device``, its optimiser and schedule, its generators."""
    rank, world = _dist()
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad] if params is None else list(params)
    # fused: one kernel of torch's own (IEEE sqrt), where the default for-each path calls MKL's vsSqrt,
    # whose last bit depends on the CPU's vendor
    opt = OPTIMIZERS[recipe.optimizer](params, lr=recipe.lr, betas=recipe.betas, fused=True,
                                       weight_decay=recipe.weight_decay)
    spe = recipe.steps_per_epoch or math.ceil(n_train / recipe.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(recipe, s, spe))
    return _Run(desc, key, recipe, n_train, device, rank, world, model, opt, sched, spe,
                order=torch.Generator().manual_seed(seed), aug=torch.Generator().manual_seed(_augment_seed(seed, rank)),
                fingerprint=_fingerprint(recipe, n_train, seed, key),
                checkpoint=Path(workdir) / "last.pt" if workdir is not None else None)


def _epochs(run: _Run, step_loss, evaluate, select, sign: int, log, progress: bool) -> None:
    """Every epoch ``run`` has not trained yet: trained, evaluated, the best kept, logged, checkpointed."""
    start, epochs = len(run.history), run.recipe.epochs
    if start >= epochs:
        return
    net = run.model
    if run.world > 1:  # DDP's constructor is a collective: every rank has loaded the checkpoint by then
        net = nn.parallel.DistributedDataParallel(run.model, broadcast_buffers=False,
                                                  device_ids=[run.device.index] if run.device.type == "cuda" else None)
    t0 = time.perf_counter() - (run.history[-1]["seconds"] if run.history else 0.0)
    bar = tqdm(total=epochs * run.spe, initial=start * run.spe, desc=run.desc, unit="step",
               disable=not progress or run.rank != 0)
    for epoch in range(start, epochs):
        loss = _train_epoch(run, net, step_loss, epoch, bar)
        metrics = _evaluate(run, evaluate)
        row = _select(run, epoch, loss, time.perf_counter() - t0, metrics, select, sign)
        bar.set_postfix(loss=f"{row['loss']:.3f}")
        if run.rank == 0 and log is not None:
            extra = "".join(f"  {k} {_fmt(v)}" for k, v in metrics.items())
            log(f"epoch {epoch + 1}/{epochs}  loss {row['loss']:.3f}  lr {row['lr']:.1e}{extra}  "
                f"{row['seconds']:.0f} s")
        if run.checkpoint is not None:
            _save(run)
    bar.close()


def _train_epoch(run: _Run, net: nn.Module, step_loss, epoch: int, bar) -> float:
    """Train epoch ``epoch`` (0-based); return its loss, the mean over its examples (all ranks)."""
    batches, run.carry = _epoch_batches(run.n_train, run.recipe, run.order, run.carry)
    run.model.train()
    use_amp = run.recipe.amp and bf16_autocast(run.device)
    stats = torch.zeros(2, dtype=torch.float64, device=run.device)  # sum of loss * b, examples
    for step, batch in enumerate(batches, 1):
        if len(batch) < run.world:  # too small to split: skipped by every rank
            run.sched.step()
            bar.update()
            continue
        idx = batch[run.rank::run.world]  # this rank's share (b,)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
            loss = step_loss(net, idx, run.aug)
        if not torch.isfinite(loss):  # before it reaches the weights (a sync on a GPU: one per step)
            _refuse(run, loss, epoch, step)
        run.model.zero_grad(set_to_none=True)  # all of them: frozen ones too, if they got grads
        loss.backward()
        run.opt.step()
        run.sched.step()
        stats[0] += loss.detach().double() * len(idx)
        stats[1] += len(idx)
        bar.update()
    if run.world > 1:  # on the model's device: NCCL reduces only CUDA tensors
        dist.all_reduce(stats)
    return (stats[0] / stats[1].clamp(min=1)).item()


def _refuse(run: _Run, loss: torch.Tensor, epoch: int, step: int) -> None:
    """Stop ``run`` at a loss that is not finite, deleting its checkpoint: a resume would only diverge again,
    and the caller publishes nothing of a run that raised."""
    if run.checkpoint is not None and run.rank == 0:
        run.checkpoint.unlink(missing_ok=True)
    name = f"{run.desc} (run {run.key})" if run.key else run.desc
    raise FloatingPointError(
        f"{name}: the loss is {loss.item()} at epoch {epoch + 1}/{run.recipe.epochs}, step {step}/{run.spe}; "
        "training stopped before it reached the weights and nothing of this run was kept (a learning rate too "
        "high, or a parameter out of its range?)")


def _evaluate(run: _Run, evaluate) -> dict:
    """``evaluate(model)`` (if given) in eval mode without gradients; under DDP every rank keeps rank 0's
    values, so that they pick the same best epoch."""
    if evaluate is None:
        return {}
    run.model.eval()
    with torch.no_grad():
        metrics = {k: float(v) for k, v in evaluate(run.model).items()}
    if run.world > 1:
        box = [metrics]
        dist.broadcast_object_list(box, src=0)
        metrics = box[0]
    return metrics


def _select(run: _Run, epoch: int, loss: float, seconds: float, metrics: dict, select, sign: int) -> dict:
    """Append epoch ``epoch``'s history entry; keep it as the best if it beats the best so far on
    ``metrics[select]`` (``sign`` -1: lower is better), with a copy of its weights."""
    last_lr = run.opt.param_groups[0]["initial_lr"] * lr_at(run.recipe, (epoch + 1) * run.spe - 1, run.spe)
    row = {"epoch": epoch + 1, "loss": loss, "lr": last_lr, "seconds": seconds, **metrics}
    run.history.append(row)
    if select is None:
        run.best_epoch = epoch + 1
    elif run.best_epoch is None or sign * row[select] > sign * run.history[run.best_epoch - 1][select]:
        run.best_epoch, run.best_state = epoch + 1, _cpu_state(run.model)
    return row


def _save(run: _Run) -> None:
    """Write ``run``'s checkpoint (rank 0, atomically), with every rank's random states."""
    rngs = [_rng_state(run.aug)]
    if run.world > 1:
        rngs = [None] * run.world
        dist.all_gather_object(rngs, _rng_state(run.aug))
    if run.rank == 0:
        path = run.checkpoint
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"fingerprint": run.fingerprint, "model": run.model.state_dict(),
                    "optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(),
                    "order": run.order.get_state(), "carry": run.carry, "rng": rngs, "history": run.history,
                    "best_epoch": run.best_epoch, "best_state": run.best_state}, tmp)
        os.replace(tmp, path)


def _resume(run: _Run) -> None:
    """Load ``run``'s checkpoint if it is this run's (same fingerprint): the run goes on after the last
    epoch it finished, and gives what it would have given uninterrupted. Notes on stderr (rank 0)."""
    path = run.checkpoint
    ck = _load(path)
    if ck["fingerprint"] != run.fingerprint:
        if run.rank == 0:
            print(f"{path}: a checkpoint of another run (fingerprint {ck['fingerprint']} != {run.fingerprint}); "
                  "starting afresh and overwriting it", file=sys.stderr)
        return
    run.model.load_state_dict(ck["model"])
    run.opt.load_state_dict(ck["optimizer"])
    run.sched.load_state_dict(ck["scheduler"])
    run.order.set_state(ck["order"])
    run.carry = ck["carry"]
    if run.rank < len(ck["rng"]):
        _set_rng_state(ck["rng"][run.rank], run.aug)
    run.history, run.best_epoch, run.best_state = ck["history"], ck["best_epoch"], ck["best_state"]
    if run.rank == 0:
        print(f"{path}: resuming after epoch {len(run.history)}/{run.recipe.epochs}", file=sys.stderr)


# ---------------------------------------------------------------------------------- prediction

@torch.no_grad()
def predict_logits(model: nn.Module, n: int, batch_fn, *, device, batch_size: int = 256) -> np.ndarray:
    """Logits (n, C) float32 of examples 0..n-1, in order: ``batch_fn(idx)`` turns a LongTensor of
    indices (up to ``batch_size``) into the model's input batch. Eval mode, no grad, bf16 autocast
    on CUDA."""
    device = torch.device(device)
    model.to(device).eval()
    out = []
    for i in range(0, n, batch_size):
        idx = torch.arange(i, min(i + batch_size, n))
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16_autocast(device)):
            logits = model(batch_fn(idx).to(device))
        out.append(logits.float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


# ------------------------------------------------------------------------- the Quick tour's front

def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, batch_size: int, lr: float,
        device: torch.device, generator: torch.Generator) -> list[dict]:
    """Train ``model`` on inputs ``x`` (N, ...) and classes ``y`` (N,) with Adam at a constant
    ``lr`` and cross-entropy (through :func:`train`, fp32); one log line per epoch and a summary.

    ``generator`` gives the run's seed (one draw), so a seeded run repeats. Returns the per-epoch
    history: ``{"epoch", "loss", "train_acc"}`` (accuracy of the training batches as they were
    trained on)."""
    device = torch.device(device)
    counts = [0, 0]  # correct, seen: this epoch's training batches

    def step_loss(net, idx, _gen):
        xb, yb = x[idx].to(device).float(), y[idx].to(device)
        logits = net(xb)  # (b, C)
        counts[0] += int((logits.argmax(1) == yb).sum())
        counts[1] += len(idx)
        return F.cross_entropy(logits, yb)

    def train_acc(_model):
        acc = counts[0] / max(1, counts[1])
        counts[0] = counts[1] = 0
        return {"train_acc": acc}

    seed = int(torch.randint(2 ** 62, (1,), generator=generator))
    recipe = Recipe(epochs=epochs, batch_size=batch_size, lr=lr, optimizer="adam", amp=False)
    out = train(model, step_loss, len(x), recipe, device=device, seed=seed, evaluate=train_acc)
    history = [{"epoch": h["epoch"], "loss": h["loss"], "train_acc": h["train_acc"]} for h in out["history"]]
    last = history[-1]
    print(f"trained {epochs} epochs on {len(x)} examples: final loss {last['loss']:.3f}, "
          f"train accuracy {100 * last['train_acc']:.1f} %")
    return history


def memorised(history: list[dict], level: float = 0.999) -> int | None:
    """The first epoch whose training accuracy reached ``level`` (the network then classifies every
    training clip it sees correctly), or None."""
    return next((h["epoch"] for h in history if h["train_acc"] >= level), None)


def predict(model: nn.Module, x: torch.Tensor, *, device: torch.device, batch_size: int = 256) -> np.ndarray:
    """Predicted class (N,) of each example of ``x`` (N, ...) (eval mode)."""
    return predict_logits(model, len(x), lambda idx: x[idx].float(), device=device,
                          batch_size=batch_size).argmax(1)
