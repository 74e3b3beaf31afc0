"""The training loop (asc_lib.train): schedules, batches, selection, determinism, resume, DDP."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from asc_lib.repro import seed_everything  # noqa: E402
from asc_lib.train import Recipe, lr_at, predict, predict_logits, train, with_passes  # noqa: E402

CPU = torch.device("cpu")


# ------------------------------------------------------------------------------------- helpers

def toy(n, seed):
    """Linearly separable data (the same hyperplane for every seed): x (n, 8), y (n,) in {0, 1}."""
    w = torch.randn(8, generator=torch.Generator().manual_seed(123))
    x = torch.randn(n, 8, generator=torch.Generator().manual_seed(seed))
    return x, (x @ w > 0).long()


X, Y = toy(96, seed=0)  # training set
XV, YV = toy(64, seed=1)  # validation set


def mlp(dropout=0.0):
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 2))


def ce_step(noise=0.0):
    """step_loss: cross-entropy on X[idx], plus Gaussian input noise drawn from the generator."""
    def step(net, idx, gen):
        xb = X[idx]
        if noise:
            xb = xb + noise * torch.randn(xb.shape, generator=gen)
        return F.cross_entropy(net(xb), Y[idx])
    return step


def val_metrics(model):
    logits = model(XV)
    return {"val_acc": (logits.argmax(1) == YV).float().mean().item(), "val_loss": F.cross_entropy(logits, YV).item()}


def strip(history):
    """History without the wall-clock seconds."""
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def same_weights(a: nn.Module, b: nn.Module | dict) -> bool:
    sa, sb = a.state_dict(), b if isinstance(b, dict) else b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


RECIPE = Recipe(epochs=4, batch_size=16, lr=1e-2, schedule="warmup_linear", warmup_epochs=1, final_lr_ratio=0.1,
                weight_decay=0.01)


def run(seed=0, recipe=RECIPE, evaluate=val_metrics, select="val_acc", **kw):
    """Seed, build an MLP with dropout, train with input noise; -> (model, result)."""
    seed_everything(seed, threads=2)
    model = mlp(dropout=0.2)
    out = train(model, ce_step(noise=0.1), len(X), recipe, device=CPU, seed=seed, evaluate=evaluate,
                select=select, progress=False, log=None, **kw)
    return model, out


# ------------------------------------------------------------------------------------ schedules

def test_warmup_linear_rises_then_decays_to_the_final_ratio():
    r = Recipe(epochs=10, batch_size=4, lr=1.0, schedule="warmup_linear", warmup_epochs=2, final_lr_ratio=0.1)
    m = [lr_at(r, s, 5) for s in range(50)]  # 5 steps per epoch: 10 warm-up steps
    assert m[0] == pytest.approx(0.1) and m[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(m[:10], m[1:10]))  # rising over the warm-up
    assert all(a > b for a, b in zip(m[10:], m[11:]))  # then falling
    assert m[-1] == pytest.approx(0.1)  # lr * final_lr_ratio at the last step
    assert all(lr_at(Recipe(epochs=3, batch_size=4, lr=1.0), s, 7) == 1.0 for s in range(21))  # constant


def test_with_passes_lengthens_only_a_fixed_step_recipe_that_sees_too_few_passes():
    r = Recipe(epochs=6, batch_size=32, lr=1.0, steps_per_epoch=16)  # 3,072 clips in all
    assert with_passes(r, 160, 3) == r  # a small split already sees 19 passes
    big = with_passes(r, 3200, 3)  # 9,600 clips needed: 50 steps of 32 in each of 6 epochs
    assert big.steps_per_epoch == 50 and big.epochs == 6 and big.lr == 1.0
    assert big.epochs * big.steps_per_epoch * big.batch_size >= 3 * 3200
    assert with_passes(r, 3200, 0) == r
    assert with_passes(Recipe(epochs=6, batch_size=32, lr=1.0), 3200, 3).steps_per_epoch is None  # whole passes


def test_cosine_restarts_match_torch_and_restart_at_10_and_30_epochs():
    r = Recipe(epochs=40, batch_size=4, lr=1.0, schedule="cosine_restarts", restart_epochs=10, restart_mult=2)
    spe = 4
    m = [lr_at(r, s, spe) for s in range(40 * spe)]
    assert m[0] == 1.0 and m[10 * spe] == 1.0 and m[30 * spe] == 1.0  # restarts
    assert m[10 * spe - 1] < 0.01 and m[30 * spe - 1] < 0.01  # just before them: near 0
    assert m[5 * spe] == pytest.approx(0.5) and m[20 * spe] == pytest.approx(0.5)  # half-way: 10 + 20/2
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=10, T_mult=2)
    ref = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for s in range(40 * spe):
            sched.step(s / spe)  # fractional epochs, as torch documents for per-batch stepping
            ref.append(sched.get_last_lr()[0])
    np.testing.assert_allclose(m, ref, atol=1e-9)


# -------------------------------------------------------------------------------------- batches

def batches_seen(recipe, n=10):
    seen = []

    def step(net, idx, gen):
        seen.append(idx.clone())
        return net(torch.ones(len(idx), 1)).pow(2).mean()

    train(nn.Linear(1, 1), step, n, recipe, device=CPU, seed=0, progress=False, log=None)
    return seen


def test_steps_per_epoch_is_a_fixed_budget_of_full_batches():
    seen = batches_seen(Recipe(epochs=2, batch_size=4, lr=1e-3, steps_per_epoch=7))
    assert len(seen) == 14 and all(len(b) == 4 for b in seen)
    stream = torch.cat(seen)
    assert sorted(stream[:10].tolist()) == list(range(10))  # the stream is made of whole passes
    assert sorted(stream[10:20].tolist()) == list(range(10))


def test_an_epoch_is_one_pass_by_default():
    seen = batches_seen(Recipe(epochs=2, batch_size=4, lr=1e-3))
    assert [len(b) for b in seen] == [4, 4, 2] * 2
    for e in range(2):
        assert sorted(torch.cat(seen[3 * e:3 * e + 3]).tolist()) == list(range(10))
    assert not torch.equal(torch.cat(seen[:3]), torch.cat(seen[3:]))  # reshuffled each epoch


# ---------------------------------------------------------------------------- learning, selection

def test_a_small_mlp_learns_separable_data():
    seed_everything(0, threads=2)
    model = mlp()
    before = val_metrics(model)["val_acc"]
    lines = []
    out = train(model, ce_step(), len(X), Recipe(epochs=6, batch_size=16, lr=1e-2, optimizer="adam"),
                device=CPU, seed=0, evaluate=val_metrics, progress=False, log=lines.append)
    h = out["history"]
    assert [e["epoch"] for e in h] == list(range(1, 7)) and out["best_epoch"] == 6  # select=None: last
    assert h[-1]["loss"] < 0.5 * h[0]["loss"]
    assert h[-1]["val_acc"] >= 0.85 and h[-1]["val_acc"] > before + 0.2
    assert len(lines) == 6 and lines[0].startswith("epoch 1/6  loss ") and "  val_acc " in lines[0]
    assert h[0]["lr"] == pytest.approx(1e-2)


def test_select_keeps_the_first_best_epoch_and_its_weights():
    scores, snapshots = iter([0.1, 0.5, 0.3, 0.5]), []

    def scripted(model):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"score": next(scores)}

    model, out = run(evaluate=scripted, select="score")
    assert out["best_epoch"] == 2 and out["best"] == out["history"][1]
    assert [h["score"] for h in out["history"]] == [0.1, 0.5, 0.3, 0.5]
    assert same_weights(model, snapshots[1]) and not same_weights(model, snapshots[3])


def test_select_can_minimise_a_loss():
    scores = iter([0.9, 0.4, 0.6, 0.4])
    _, out = run(evaluate=lambda m: {"val_loss": next(scores)}, select="val_loss", mode="min")
    assert out["best_epoch"] == 2
    with pytest.raises(ValueError, match="mode must be"):
        run(evaluate=lambda m: {"val_loss": 0.0}, select="val_loss", mode="lowest")


# ------------------------------------------------------------------------- determinism and resume

def test_two_runs_with_the_same_seed_are_identical():
    m1, o1 = run(seed=0)
    m2, o2 = run(seed=0)
    m3, o3 = run(seed=1)
    assert strip(o1["history"]) == strip(o2["history"]) and same_weights(m1, m2)
    assert strip(o1["history"]) != strip(o3["history"])


def test_a_run_owns_its_randomness_whatever_ran_before():
    """Dropout draws from torch's global generator: the run seeds it from its own seed, so draws made
    before the run (another run, a cached step that did not run) change nothing; the caller's
    generator state is given back untouched."""
    def one(before):
        torch.manual_seed(0)
        model = mlp(dropout=0.5)
        torch.rand(before)  # what ran before in the process
        state = torch.get_rng_state()
        out = train(model, ce_step(noise=0.1), len(X), RECIPE, device=CPU, seed=3, evaluate=val_metrics,
                    select="val_acc", progress=False, log=None)
        assert torch.equal(torch.get_rng_state(), state)
        return model, out
    (m1, o1), (m2, o2) = one(1), one(1000)
    assert strip(o1["history"]) == strip(o2["history"]) and same_weights(m1, m2)


STREAM = Recipe(epochs=4, batch_size=16, lr=1e-2, schedule="cosine_restarts", restart_epochs=1, steps_per_epoch=5)


@pytest.mark.parametrize("recipe", [RECIPE, STREAM], ids=["one_pass", "fixed_steps"])
def test_an_interrupted_run_resumes_to_exactly_the_uninterrupted_result(tmp_path, capsys, recipe):
    """Dropout (global RNG), input noise (the augmentation generator), the batch order and, with a
    fixed steps_per_epoch, the indices drawn but not used yet, all carry over."""
    full_model, full = run(recipe=recipe, workdir=tmp_path / "full")
    calls = []

    def interrupted(model):
        calls.append(1)
        if len(calls) == 3:  # after epoch 3's training, before its checkpoint
            raise KeyboardInterrupt
        return val_metrics(model)

    with pytest.raises(KeyboardInterrupt):
        run(recipe=recipe, evaluate=interrupted, workdir=tmp_path / "cut")
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["history"][-1]["epoch"] == 2
    capsys.readouterr()
    model, out = run(recipe=recipe, workdir=tmp_path / "cut")
    assert "resuming after epoch 2/4" in capsys.readouterr().err
    assert strip(out["history"]) == strip(full["history"]) and out["best_epoch"] == full["best_epoch"]
    assert same_weights(model, full_model)
    # a finished run returns at once, with the best weights
    steps = []
    seed_everything(0, threads=2)
    again = mlp(dropout=0.2)
    out2 = train(again, lambda net, idx, g: steps.append(1), len(X), recipe, device=CPU, seed=0,
                 evaluate=val_metrics, select="val_acc", workdir=tmp_path / "cut", progress=False, log=None)
    assert steps == [] and strip(out2["history"]) == strip(full["history"]) and same_weights(again, full_model)


def test_a_checkpoint_of_another_run_is_not_resumed(tmp_path, capsys):
    run(workdir=tmp_path)
    first = torch.load(tmp_path / "last.pt", weights_only=True)["fingerprint"]
    capsys.readouterr()
    steps = []

    def counting(model):
        steps.append(1)
        return val_metrics(model)

    model, out = run(workdir=tmp_path, key="another teacher", evaluate=counting)
    assert "starting afresh" in capsys.readouterr().err
    assert len(steps) == RECIPE.epochs  # every epoch trained again
    fresh_model, fresh = run()
    assert strip(out["history"]) == strip(fresh["history"]) and same_weights(model, fresh_model)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["fingerprint"] != first  # overwritten


@pytest.mark.parametrize("damage", ["empty", "truncated", "not_torch", "other_dict", "code"])
def test_a_damaged_checkpoint_is_named_with_the_way_out(tmp_path, damage):
    run(workdir=tmp_path)
    path = tmp_path / "last.pt"
    whole = path.read_bytes()
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(whole[: len(whole) // 2])
    elif damage == "not_torch":
        path.write_text("epoch 3 of 4\n")
    elif damage == "other_dict":
        torch.save({"model": {}}, path)
    else:  # a pickle that would run code: weights_only refuses it, and so do we, without suggesting otherwise
        import pickle
        path.write_bytes(pickle.dumps(Exception("boom")))
    with pytest.raises(RuntimeError, match=f"{re.escape(str(path))}: .*; delete {re.escape(str(path))} to start") as err:
        run(workdir=tmp_path)
    assert "weights_only=False" not in str(err.value)
    assert ("holds objects that are not plain data" in str(err.value)) == (damage == "code")


# ------------------------------------------------------------------------------- refused inputs

@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_loss_stops_the_run_where_it_happened_and_keeps_nothing(tmp_path, bad):
    """At T = 0 (or a rate that diverges) every loss is NaN: the run must stop at the first one, naming the
    run, epoch and step, before the loss reaches the weights, and leave no checkpoint to resume or publish."""
    seed_everything(0, threads=2)
    model, ce, calls = mlp(), ce_step(), []

    def step(net, idx, gen):
        calls.append(1)
        loss = ce(net, idx, gen)
        return loss * bad if len(calls) == 6 + 3 else loss  # epoch 2 (of 6 steps), its step 3

    before = {}

    def evaluate(m):
        before.update({k: v.clone() for k, v in m.state_dict().items()})
        return val_metrics(m)

    with pytest.raises(FloatingPointError, match=rf"teacher SSL 5 % \(run k3y\): the loss is {bad} at epoch 2/4, "
                                                 r"step 3/6; training stopped"):
        train(model, step, len(X), RECIPE, device=CPU, seed=0, evaluate=evaluate, workdir=tmp_path, key="k3y",
              desc="teacher SSL 5 %", progress=False, log=None)
    assert len(calls) == 9 and not (tmp_path / "last.pt").exists()  # epoch 1's checkpoint deleted
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())
    assert not same_weights(model, before)  # steps 1 and 2 of epoch 2 trained; step 3 did not reach the weights


def test_a_recipe_refuses_a_learning_rate_that_is_not_positive():
    for lr in (0.0, -1e-3, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"Recipe: lr \(the learning rate\) must be a finite number > 0"):
            Recipe(epochs=2, batch_size=4, lr=lr)
    with pytest.raises(ValueError, match="Recipe: batch_size must be >= 1, got 0"):
        Recipe(epochs=2, batch_size=0, lr=1e-3)


def test_the_loop_is_made_of_steps_each_on_one_screen():
    """One epoch, evaluation and selection, checkpointing: named functions of at most 40 lines of code."""
    import ast
    import inspect

    from asc_lib import train as module

    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.FunctionDef):
            body = node.body[1:] if isinstance(node.body[0], ast.Expr) else node.body  # without its docstring
            assert body[-1].end_lineno - body[0].lineno + 1 <= 40, node.name
    assert {"_train_epoch", "_evaluate", "_select", "_save", "_resume"} <= set(vars(module))


# ---------------------------------------------------------------------------------------- params

def test_params_restricts_what_is_trained():
    seed_everything(0, threads=2)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    encoder = {k: v.clone() for k, v in model[0].state_dict().items()}
    head = {k: v.clone() for k, v in model[2].state_dict().items()}
    r = Recipe(epochs=2, batch_size=16, lr=1e-2, weight_decay=0.1)
    train(model, ce_step(), len(X), r, device=CPU, seed=0, params=model[2].parameters(), progress=False, log=None)
    assert same_weights(model[0], encoder)  # frozen, although it requires grad
    assert not same_weights(model[2], head)
    train(model, ce_step(), len(X), r, device=CPU, seed=0, progress=False, log=None)
    assert not same_weights(model[0], encoder)  # by default: everything


# ------------------------------------------------------------------------------------------- DDP

def ddp_case(workdir=None) -> dict:
    """The run compared between 1 and 2 processes: no batch-dependent layer, a deterministic loss,
    32 examples in batches of 8 (every share has 4). Records the size of every share it trains on."""
    seed_everything(0, threads=1)
    model = mlp()
    lines, seen, ce = [], [], ce_step()
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0

    def step(net, idx, gen):
        seen.append(len(idx))
        return ce(net, idx, gen)

    r = Recipe(epochs=3, batch_size=8, lr=1e-2, schedule="warmup_linear", warmup_epochs=1, final_lr_ratio=0.1)
    out = train(model, step, 32, r, device=CPU, seed=0, evaluate=lambda m: {"rank": rank}, workdir=workdir,
                progress=False, log=lines.append)
    weights = torch.cat([p.detach().flatten() for p in model.parameters()]).tolist()
    return {"loss": [h["loss"] for h in out["history"]], "rank": [h["rank"] for h in out["history"]],
            "weights": weights, "lines": lines, "seen": seen}


DDP_SCRIPT = """
import json, os, sys
sys.path[:0] = [{root!r}, {here!r}]
import torch.distributed as dist
from test_train import ddp_case
dist.init_process_group("gloo")
out = ddp_case({work!r})
json.dump(out, open(os.path.join({out!r}, f"rank{{dist.get_rank()}}.json"), "w"))
dist.destroy_process_group()
"""


def test_two_gloo_processes_match_one(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(root=str(ROOT), here=str(HERE), work=str(tmp_path / "work"), out=str(tmp_path)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(script)], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1))
    one = ddp_case()
    assert r0["loss"] == r1["loss"] and r0["weights"] == r1["weights"]  # all-reduced, replicas in step
    assert r0["rank"] == r1["rank"] == [0.0] * 3  # rank 0's metrics, on every rank
    np.testing.assert_allclose(r0["loss"], one["loss"], rtol=1e-5)
    np.testing.assert_allclose(r0["weights"], one["weights"], rtol=1e-4, atol=1e-6)
    assert r0["seen"] == r1["seen"] == [4] * 12 and one["seen"] == [8] * 12  # each rank: half of each batch
    assert len(r0["lines"]) == 3 and r1["lines"] == []  # only rank 0 logs
    ck = torch.load(tmp_path / "work" / "last.pt", weights_only=True)
    assert len(ck["rng"]) == 2 and len(ck["history"]) == 3  # every rank's random states, saved by rank 0


# ------------------------------------------------------------------------------------ prediction

def test_predict_logits_keeps_the_order():
    torch.manual_seed(0)
    model = nn.Linear(8, 3)
    asked = []

    def batch_fn(idx):
        asked.append(idx.clone())
        return X[idx]

    logits = predict_logits(model, 10, batch_fn, device=CPU, batch_size=3)
    assert logits.shape == (10, 3) and logits.dtype == np.float32
    assert [len(i) for i in asked] == [3, 3, 3, 1] and torch.cat(asked).tolist() == list(range(10))
    with torch.no_grad():
        np.testing.assert_allclose(logits, model(X[:10]).numpy(), rtol=1e-6)
    assert np.array_equal(predict(model, X[:10], device=CPU, batch_size=4), logits.argmax(1))
    assert not model.training
