"""Teachers: the token head, validation hold-out, runs with manifests, logits and ensembles."""

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from asc_lib import profiles, runs, teachers
from asc_lib.data import dataset
from asc_lib.data.tau import read_meta, read_split
from asc_lib.models.beats import BEATs, released_config, save_beats_checkpoint
from asc_lib.pretrain import small_config
from asc_lib.train import Recipe

TINY_BEATS = small_config(encoder_layers=1, encoder_embed_dim=32, encoder_ffn_embed_dim=64,
                          encoder_attention_heads=2, embed_dim=32, conv_pos=4, conv_pos_groups=4)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ASC_ARTIFACTS", str(tmp_path_factory.mktemp("artifacts")))
        ci = profiles.get_profile("ci")
        recipe = Recipe(epochs=2, steps_per_epoch=2, batch_size=8, lr=1e-3)
        profile = replace(ci, data=replace(ci.data, twin_size="tiny"),
                          teachers=replace(ci.teachers, frozen=recipe, finetune=replace(recipe, optimizer="adamw"),
                                           min_passes=0, finetune_epochs=()))
        root = dataset.prepare("", profile, seed=0)
        folder = tmp_path_factory.mktemp("ckpt")
        torch.manual_seed(0)
        ckpts = {"SSL": save_beats_checkpoint(BEATs(TINY_BEATS), folder / "ssl.pt"),
                 "SSL+SL": save_beats_checkpoint(BEATs(TINY_BEATS), folder / "ssl_sl.pt")}
        meta = read_meta(root)
        yield profile, root, meta, ckpts


def killed_in_epoch(train, epoch):
    """``train`` as if the machine stopped while epoch ``epoch`` was being scored (for the resume tests)."""
    def cut(*args, evaluate, **kwargs):
        def scored(model, calls=[]):
            calls.append(1)
            if len(calls) == epoch:
                raise KeyboardInterrupt
            return evaluate(model)
        return train(*args, evaluate=scored, **kwargs)
    return cut


def whole_and_resumed(module, run, monkeypatch, tmp_path, killed=2):
    """``run()`` once uninterrupted, then in another artifacts folder killed in epoch ``killed``
    (``module.train`` cut) and run again to resume: ``(whole, resumed)`` manifests."""
    monkeypatch.setenv("ASC_ARTIFACTS", str(tmp_path / "whole"))
    whole = run()
    real = module.train
    monkeypatch.setenv("ASC_ARTIFACTS", str(tmp_path / "cut"))
    monkeypatch.setattr(module, "train", killed_in_epoch(real, killed))
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(module, "train", real)
    return whole, run()


def assert_same_publication(whole: dict, resumed: dict, arrays) -> None:
    """Two runs published the same: weights, ``arrays``, manifest and history (seconds aside)."""
    a, b = Path(whole["folder"]), Path(resumed["folder"])
    for name in arrays:
        assert np.array_equal(np.load(a / name), np.load(b / name)), name
    sa, sb = (torch.load(f / "model.pt", weights_only=True)["state_dict"] for f in (a, b))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    drop = lambda m: {k: v for k, v in m.items() if k not in ("folder", "seconds", "history")}
    assert drop(whole) == drop(resumed)
    strip = lambda hist: [{k: v for k, v in h.items() if k != "seconds"} for h in hist]
    assert strip(whole["history"]) == strip(resumed["history"])


def _run(setup, strategy, split=100, capsys=None):
    profile, root, meta, ckpts = setup
    return teachers.run_teacher(strategy, split, meta=meta, split_part=read_split(root, split, meta),
                                test_part=read_split(root, "test", meta), w16=dataset.waves(meta, 16000, profile),
                                checkpoints=ckpts, settings=profile.teachers, root=root, profile=profile.name,
                                seed=0, device="cpu", progress=False)


def test_token_head_averages_logits_over_tokens():
    torch.manual_seed(0)
    model = teachers.TokenClassifier(BEATs(TINY_BEATS)).eval()
    fb = torch.randn(3, 98, 128)
    tokens = model.encoder.forward_fbank(fb)[0]  # (3, 48, C)
    assert tokens.shape[1] == 48
    assert torch.allclose(model(fb), model.head(tokens).mean(1), atol=1e-6)
    assert model(fb).shape == (3, 10)


def test_frozen_teacher_trains_only_its_head():
    torch.manual_seed(0)
    model = teachers.TokenClassifier(BEATs(TINY_BEATS), frozen=True)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    model.train()
    assert not model.encoder.training  # no dropout in the frozen encoder
    loss = model(torch.randn(2, 98, 128)).sum()
    loss.backward()
    assert model.head.weight.grad is not None
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.encoder.state_dict().items())


def test_a_tagging_checkpoint_loses_its_predictor():
    cfg = replace(TINY_BEATS, finetuned_model=True, predictor_class=5)
    model = teachers.TokenClassifier(BEATs(cfg))
    assert model.encoder.predictor is None and model(torch.randn(1, 98, 128)).shape == (1, 10)


def test_validation_holds_out_whole_recordings_of_every_scene():
    # two scenes: "x" with 20 recordings, "y" with 3
    recs = [f"x{i}" for i in range(20)] + ["y0", "y1", "y2"]
    part = pd.DataFrame({"recording": np.repeat(recs, 10), "scene": np.repeat([r[0] for r in recs], 10),
                         "filename": np.arange(230)})
    train, val = teachers.hold_out_recordings(part, 0.1, seed=0)
    assert val.groupby("scene").recording.nunique().to_dict() == {"x": 2, "y": 1}  # round(0.3) -> at least 1
    assert len(val) == 30 and len(train) == 200
    assert not set(train.recording) & set(val.recording)
    again, _ = teachers.hold_out_recordings(part, 0.1, seed=0)
    assert train.equals(again)
    other, _ = teachers.hold_out_recordings(part, 0.1, seed=1)
    assert not train.equals(other)
    with pytest.raises(ValueError, match="scene 'y': the split has 1 recording"):
        teachers.hold_out_recordings(part.iloc[:210], 0.1, seed=0)


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="unknown teacher strategy 'SSL2'"):
        teachers.make_teacher("SSL2", {}, seed=0)


def test_subsets_are_the_seven_ensembles():
    subs = teachers.subsets()
    assert len(subs) == 7 and subs[:3] == [("SSL*",), ("SSL",), ("SSL+SL",)] and subs[-1] == teachers.TEACHERS


def test_run_writes_a_manifest_logits_and_is_reused(setup, capsys):
    profile, root, meta, _ = setup
    m = _run(setup, "SSL")
    folder = Path(m["folder"])
    for name in ("manifest.json", "model.pt", "train_logits.npy", "test_logits.npy"):
        assert (folder / name).is_file(), name
    assert not (folder / "last.pt").exists()  # a complete run keeps no resume state (1.4 GB for BEATs)
    split = read_split(root, 100, meta)
    assert m["train_files"] == split.filename.tolist()
    assert np.load(folder / "train_logits.npy").shape == (len(split), 10)
    assert m["teacher"] == "SSL" and m["split"] == 100 and "teachers v" in m["code_version"]
    assert m["config"]["data"] == dataset.data_key(root, profile.name)  # with the clips' bytes (test_data)
    assert len(m["history"]) == 2 and m["best_epoch"] == 2 and m["kept"] == "last"  # the ci profile's choice
    assert m["val_selected_test_acc"] == m["history"][m["val_selected_epoch"] - 1]["test_acc"]
    assert m["test_selected_test_acc"] == max(h["test_acc"] for h in m["history"])
    assert set(m["test"]["device"]) == set(read_split(root, "test", meta).device)
    # the test logits are those of the selected epoch
    test = read_split(root, "test", meta)
    pred = np.load(folder / "test_logits.npy").argmax(1)
    from asc_lib.metrics import macro_accuracy
    assert macro_accuracy(dataset.labels(test), pred, 10) * 100 == pytest.approx(m["test"]["macro"])
    capsys.readouterr()
    again = _run(setup, "SSL")
    assert again == m and "folder" not in json.loads((folder / "manifest.json").read_text())  # no path kept
    assert "reusing" in capsys.readouterr().err


def test_finetune_epochs_lengthen_the_fine_tuned_teachers_of_their_splits_only():
    t = profiles.get_profile("ci").teachers
    assert dict(t.finetune_epochs) == {5: 20} and t.finetune.epochs == 10
    for strategy in ("scratch", "SSL", "SSL+SL"):
        assert teachers.recipe_of(strategy, t, 140, 5) == replace(t.finetune, epochs=20)
        assert teachers.recipe_of(strategy, t, 140, 25) == t.finetune  # the same clips, another split
    assert teachers.recipe_of("SSL*", t, 140, 5) == t.frozen  # the frozen head keeps its recipe


def test_a_teacher_can_keep_its_last_epoch(setup, monkeypatch, tmp_path):
    """keep="last" (the ci profile): the published logits are the last epoch's; the epoch that validation
    loss would have kept is still recorded, with its monitored test accuracy."""
    monkeypatch.setenv("ASC_ARTIFACTS", str(tmp_path))
    profile, root, meta, ckpts = setup
    settings = replace(profile.teachers, keep="last", test_monitor=1.0,
                       finetune=replace(profile.teachers.finetune, epochs=3))
    m = teachers.run_teacher("SSL", 100, meta=meta, split_part=read_split(root, 100, meta),
                             test_part=read_split(root, "test", meta), w16=dataset.waves(meta, 16000, profile),
                             checkpoints=ckpts, settings=settings, root=root, profile=profile.name, seed=0,
                             device="cpu", progress=False)
    h = m["history"]
    assert m["kept"] == "last" and m["best_epoch"] == len(h) == 3
    assert m["test"]["macro"] == pytest.approx(h[-1]["test_acc"])  # every test clip scored: the last epoch's
    val = [e["val_loss"] for e in h]
    assert m["val_selected_epoch"] == 1 + val.index(min(val))
    assert m["val_selected_test_acc"] == h[m["val_selected_epoch"] - 1]["test_acc"]
    with pytest.raises(ValueError, match="keep must be 'val_loss' or 'last'"):
        replace(profile.teachers, keep="best")


@pytest.mark.slow
def test_other_weights_under_the_same_name_and_size_make_another_run(setup, tmp_path):
    profile, *_ = setup
    first = save_beats_checkpoint(BEATs(TINY_BEATS), tmp_path / "ssl.pt")
    ids = runs.checkpoint_ids({"SSL": first}, profile.name)
    assert ids == runs.checkpoint_ids({"SSL": first}, profile.name)  # unchanged file: same run
    size, mtime = first.stat().st_size, first.stat().st_mtime_ns
    torch.manual_seed(1)
    save_beats_checkpoint(BEATs(TINY_BEATS), first)  # other weights, same name
    os.utime(first, ns=(mtime, mtime))
    assert first.stat().st_size == size
    other = runs.checkpoint_ids({"SSL": first}, profile.name)
    assert other["SSL"][0] == "ssl.pt" and other != ids


@pytest.mark.slow
def test_a_swapped_checkpoint_trains_again_on_its_own_tokens(setup, monkeypatch, tmp_path, capsys):
    import shutil

    profile, root, meta, ckpts = setup
    path = Path(shutil.copy(ckpts["SSL"], tmp_path / "ssl.pt"))
    w16 = dataset.waves(meta, 16000, profile)
    inputs = teachers.TeacherInputs(w16, cache=True)  # one kernel: the cached tokens outlive the file
    kw = dict(meta=meta, split_part=read_split(root, 100, meta), test_part=read_split(root, "test", meta), w16=w16,
              checkpoints={**ckpts, "SSL": path}, settings=profile.teachers, root=root, profile=profile.name, seed=0,
              device="cpu", progress=False)
    monkeypatch.setenv("ASC_ARTIFACTS", str(tmp_path / "a"))
    first = teachers.run_teacher("SSL*", 100, inputs=inputs, **kw)
    torch.manual_seed(1)
    save_beats_checkpoint(BEATs(TINY_BEATS), path)  # other weights under the same name
    capsys.readouterr()
    second = teachers.run_teacher("SSL*", 100, inputs=inputs, **kw)
    assert "reusing" not in capsys.readouterr().err and second["key"] != first["key"]
    monkeypatch.setenv("ASC_ARTIFACTS", str(tmp_path / "b"))  # the same run in a fresh process
    fresh = teachers.run_teacher("SSL*", 100, inputs=teachers.TeacherInputs(w16, cache=True), **kw)
    assert np.array_equal(teachers.load_logits(second, "test"), teachers.load_logits(fresh, "test"))


def test_a_damaged_manifest_or_logits_file_is_named_with_the_way_out(setup):
    import re

    m = _run(setup, "SSL")
    folder = Path(m["folder"])
    kept = {name: (folder / name).read_bytes() for name in ("manifest.json", "test_logits.npy")}
    try:
        (folder / "test_logits.npy").write_bytes(b"\x93NUMPY cut short")
        with pytest.raises(RuntimeError, match=rf"test_logits.npy: its bytes have changed since it was written .*; "
                                               rf"delete {re.escape(str(folder))} to train it again"):
            teachers.load_logits(m, "test")
        (folder / "manifest.json").write_text('{"teacher": "SSL", ')
        with pytest.raises(RuntimeError, match=r"manifest.json: cannot read this run's manifest .*; delete .* to "
                                               r"train this run again"):
            _run(setup, "SSL")
    finally:
        for name, data in kept.items():
            (folder / name).write_bytes(data)


def test_frozen_run_leaves_the_encoder_as_loaded(setup):
    m = _run(setup, "SSL*", split=50)
    state = torch.load(Path(m["folder"]) / "model.pt", weights_only=True)["state_dict"]
    loaded = torch.load(setup[3]["SSL"], weights_only=True)["model"]
    assert all(torch.equal(state[f"encoder.{k}"], v) for k, v in loaded.items())


def test_logits_are_read_through_the_manifest_by_clip_name(setup):
    m = _run(setup, "SSL")
    files = list(reversed(m["train_files"][:5]))
    logits = teachers.load_logits(m, "train", files)
    full = np.load(Path(m["folder"]) / "train_logits.npy")
    assert np.array_equal(logits, full[[4, 3, 2, 1, 0]])
    with pytest.raises(KeyError, match="no SSL logits for 1 clip"):
        teachers.load_logits(m, "train", ["audio/never-seen.wav"])
    y_test = dataset.labels(read_split(setup[1], "test", setup[2]))
    assert teachers.ensemble_accuracy({"SSL": m}, ("SSL",), y_test) == pytest.approx(m["test"]["macro"])
    ens = teachers.ensemble_logits({"SSL": m, "SSL+SL": _run(setup, "SSL+SL")}, ("SSL", "SSL+SL"), "train")
    other = np.load(Path(_run(setup, "SSL+SL")["folder"]) / "train_logits.npy")
    assert np.allclose(ens, (full + other) / 2)


def test_full_profile_smoke_step_runs_the_released_architecture():
    # the real 12-layer config with random weights: one step of each strategy (GPU path on a GPU)
    losses = teachers.smoke_test(released_config(), "cpu", clips=2)
    assert set(losses) == set(teachers.STRATEGIES)
    assert all(np.isfinite(v) and v > 0 for v in losses.values())


@pytest.mark.slow
def test_cached_inputs_give_the_same_teacher(setup):
    # the ci profile keeps fbanks and the frozen encoder's tokens in memory; the result must not change
    profile, root, meta, ckpts = setup
    cached = replace(profile.teachers, cache_inputs=True)
    w16 = dataset.waves(meta, 16000, profile)
    m = teachers.run_teacher("SSL*", 50, meta=meta, split_part=read_split(root, 50, meta),
                             test_part=read_split(root, "test", meta), w16=w16, checkpoints=ckpts,
                             settings=cached, root=root, profile=profile.name, seed=0, device="cpu",
                             progress=False, inputs=teachers.TeacherInputs(w16, cache=True))
    plain = teachers.run_teacher("SSL*", 50, meta=meta, split_part=read_split(root, 50, meta),
                                 test_part=read_split(root, "test", meta), w16=w16, checkpoints=ckpts,
                                 settings=replace(cached, cache_inputs=False), root=root, profile=profile.name,
                                 seed=0, device="cpu", progress=False)
    assert m["key"] != plain["key"]
    assert [h["val_loss"] for h in m["history"]] == pytest.approx([h["val_loss"] for h in plain["history"]], abs=1e-5)
    assert m["test"]["macro"] == pytest.approx(plain["test"]["macro"])
    assert np.allclose(teachers.load_logits(m, "train"), teachers.load_logits(plain, "train"), atol=1e-4)


@pytest.mark.parametrize("strategy, monitor, killed", [
    ("SSL+SL", 1.0, 2), ("SSL+SL", 0.5, 2),  # the whole test split monitored, or only a share
    ("SSL*", 1.0, 2),  # the frozen encoder: only the head trains, on cached tokens
    ("SSL+SL", 1.0, 4),  # resumed after its selected epoch: that epoch's test logits were never kept
])
@pytest.mark.slow
def test_a_resumed_teacher_publishes_what_an_uninterrupted_one_does(setup, monkeypatch, tmp_path, strategy, monitor,
                                                                   killed):
    profile, root, meta, ckpts = setup
    t = profile.teachers
    # 4 epochs; the frozen head at a rate at which its best epoch is not the last (checked below)
    settings = replace(t, test_monitor=monitor, finetune=replace(t.finetune, epochs=4), keep="val_loss",
                       frozen=replace(t.frozen, epochs=4, lr=2e-1))
    w16 = dataset.waves(meta, 16000, profile)
    kw = dict(meta=meta, split_part=read_split(root, 100, meta), test_part=read_split(root, "test", meta),
              w16=w16, checkpoints=ckpts, settings=settings, root=root, profile=profile.name, seed=0, device="cpu",
              progress=False)
    run = lambda: teachers.run_teacher(strategy, 100, inputs=teachers.TeacherInputs(w16, cache=True), **kw)
    whole, resumed = whole_and_resumed(teachers, run, monkeypatch, tmp_path, killed)

    assert_same_publication(whole, resumed, ("test_logits.npy", "train_logits.npy"))
    # not the last epoch: a resume that mislaid the monitored logits would publish another epoch's
    assert whole["best_epoch"] < 4


@pytest.mark.slow
def test_a_moved_artifacts_folder_is_still_reused(setup, monkeypatch, tmp_path, capsys):
    import shutil

    profile, root, meta, ckpts = setup
    kw = dict(meta=meta, split_part=read_split(root, 100, meta), test_part=read_split(root, "test", meta),
              w16=dataset.waves(meta, 16000, profile), checkpoints=ckpts, settings=profile.teachers, root=root,
              profile=profile.name, seed=0, device="cpu", progress=False)
    monkeypatch.setenv("ASC_ARTIFACTS", str(tmp_path / "here"))
    first = teachers.run_teacher("SSL", 100, **kw)
    shutil.move(tmp_path / "here", tmp_path / "there")
    monkeypatch.setenv("ASC_ARTIFACTS", str(tmp_path / "there"))
    capsys.readouterr()
    moved = teachers.run_teacher("SSL", 100, **kw)
    assert "reusing" in capsys.readouterr().err and moved["key"] == first["key"]
    assert moved["folder"].startswith(str(tmp_path / "there"))
    assert teachers.load_logits(moved, "test").shape == (len(kw["test_part"]), 10)  # read from where it is now
