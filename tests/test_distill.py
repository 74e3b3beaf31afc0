"""Distillation: the KD loss as the paper defines it, and student runs fed by teacher manifests."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from asc_lib import distill, teachers
from asc_lib.data import dataset
from asc_lib.data.tau import read_split
from asc_lib.integrity import file_hash
from asc_lib.paths import artifacts_dir
from asc_lib.train import Recipe
from test_teachers import _run, assert_same_publication, setup, whole_and_resumed  # noqa: F401  (the tiny twin and tiny BEATs checkpoints)


def test_kd_loss_is_t_squared_kl_with_log_targets_and_mean_reduction():
    torch.manual_seed(0)
    s, t = torch.randn(4, 10), torch.randn(4, 10)
    p_t, p_s = F.softmax(t / 2, 1), F.softmax(s / 2, 1)
    by_hand = 4 * (p_t * (p_t.log() - p_s.log())).sum() / s.numel()  # "mean": over batch and classes
    assert distill.kd_loss(s, t, 2.0).item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert distill.kd_loss(t, t, 2.0).item() == pytest.approx(0.0, abs=1e-7)


def test_teacher_side_gets_no_gradient_and_lambda_weights_the_terms():
    s = torch.randn(3, 10, requires_grad=True)
    t = torch.randn(3, 10, requires_grad=True)
    y = torch.tensor([0, 1, 2])
    loss = distill.distill_loss(s, y, y, 1.0, t, t, kd_lambda=0.02, temperature=2.0)
    loss.backward()
    assert t.grad is None and s.grad is not None
    ce, kd = F.cross_entropy(s, y), distill.kd_loss(s, t, 2.0)
    assert loss.item() == pytest.approx((0.02 * ce + 0.98 * kd).item(), rel=1e-5)
    only_ce = distill.distill_loss(s, y, y, 1.0, kd_lambda=0.02, temperature=2.0)
    assert only_ce.item() == pytest.approx(ce.item(), rel=1e-6)


def test_mixup_mixes_the_kd_term_per_teacher_target():
    torch.manual_seed(1)
    s, ta, tb = torch.randn(5, 10), torch.randn(5, 10), torch.randn(5, 10)
    ya, yb = torch.arange(5), torch.arange(5).flip(0)
    got = distill.distill_loss(s, ya, yb, 0.3, ta, tb, kd_lambda=0.02, temperature=2.0)
    want = 0.02 * (0.3 * F.cross_entropy(s, ya) + 0.7 * F.cross_entropy(s, yb)) + \
        0.98 * (0.3 * distill.kd_loss(s, ta, 2.0) + 0.7 * distill.kd_loss(s, tb, 2.0))
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_student_runs_from_scratch_and_from_an_ensemble(setup, capsys):  # noqa: F811
    profile, root, meta, _ = setup
    settings = replace(profile.student, n_mels=32, calibration_clips=8, cache_features=False, dir_p=0.4, min_passes=0,
                       recipe=Recipe(epochs=2, steps_per_epoch=2, batch_size=8, lr=1e-3, optimizer="adam"))
    mans = {t: _run(setup, t) for t in ("SSL*", "SSL", "SSL+SL")}
    kw = dict(meta=meta, split_part=read_split(root, 100, meta), test_part=read_split(root, "test", meta),
              w32=dataset.waves(meta, 32000, profile), manifests=mans, settings=settings, root=root,
              profile=profile.name, seed=0, device="cpu", progress=False)
    capsys.readouterr()
    scratch = distill.run_student(None, 100, **kw)
    ens = distill.run_student(("SSL", "SSL+SL"), 100, **kw)
    # progress=False trains quietly: a checked chapter cell prints the same text trained or cached
    assert capsys.readouterr().out == ""
    assert scratch["teacher"] == "scratch" and ens["teacher"] == "SSL + SSL+SL"
    assert ens["config"]["teachers"] == {"SSL": mans["SSL"]["key"], "SSL+SL": mans["SSL+SL"]["key"]}
    assert scratch["key"] != ens["key"] and len(ens["history"]) == 2
    assert ens["config"]["data"] == dataset.data_key(root, profile.name)  # with the clips' bytes (test_data)
    logits = np.load(Path(ens["folder"]) / "test_logits.npy")
    assert logits.shape == (len(kw["test_part"]), 10)
    model = distill.load_student(ens)
    x = distill.logmel_all(kw["w32"][dataset.rows(meta, kw["test_part"])[:4]], 32)
    with torch.no_grad():  # (its INT8 check runs in the student chapter, and test_quantize tests INT8)
        assert np.allclose(model(x).numpy(), logits[:4], atol=1e-4)
    capsys.readouterr()
    assert distill.run_student(("SSL", "SSL+SL"), 100, **kw) == ens
    assert "reusing" in capsys.readouterr().err


def test_a_teacher_that_never_saw_a_clip_is_a_clear_error(setup):  # noqa: F811
    profile, root, meta, _ = setup
    mans = {"SSL": _run(setup, "SSL", split=50)}
    with pytest.raises(KeyError, match="no SSL logits"):
        distill.run_student("SSL", 100, meta=meta, split_part=read_split(root, 100, meta),
                            test_part=read_split(root, "test", meta), w32=dataset.waves(meta, 32000, profile),
                            manifests=mans, settings=replace(profile.student, cache_features=False), root=root, profile=profile.name, seed=0,
                            device="cpu", progress=False)


@pytest.mark.slow
def test_cached_features_train_without_dir_and_say_so(setup):  # noqa: F811
    profile, root, meta, _ = setup
    w32 = dataset.waves(meta, 32000, profile)
    settings = replace(profile.student, n_mels=32, cache_features=True, dir_p=0.0, min_passes=0,
                       recipe=Recipe(epochs=1, steps_per_epoch=2, batch_size=8, lr=1e-3, optimizer="adam"))
    kw = dict(meta=meta, split_part=read_split(root, 100, meta), test_part=read_split(root, "test", meta),
              w32=w32, manifests={}, root=root, profile=profile.name, seed=0, device="cpu", progress=False)
    with pytest.raises(ValueError, match="pass features"):
        distill.run_student(None, 100, settings=settings, **kw)
    with pytest.raises(ValueError, match="set dir_p=0"):
        distill.run_student(None, 100, settings=replace(settings, dir_p=0.4), features=torch.zeros(1), **kw)
    features = distill.logmel_all(w32, 32).half()
    m = distill.run_student(None, 100, settings=settings, features=features, **kw)
    assert m["teacher"] == "scratch" and len(m["history"]) == 1


@pytest.mark.slow
def test_a_resumed_student_publishes_what_an_uninterrupted_one_does(setup, monkeypatch, tmp_path):  # noqa: F811
    profile, root, meta, _ = setup
    settings = replace(profile.student, n_mels=32, cache_features=False, dir_p=0.4, min_passes=0,
                       recipe=Recipe(epochs=3, steps_per_epoch=2, batch_size=8, lr=1e-3, optimizer="adam"))
    mans = {"SSL+SL": _run(setup, "SSL+SL")}
    kw = dict(meta=meta, split_part=read_split(root, 100, meta), test_part=read_split(root, "test", meta),
              w32=dataset.waves(meta, 32000, profile), manifests=mans, settings=settings, root=root,
              profile=profile.name, seed=0, device="cpu", progress=False)
    whole, resumed = whole_and_resumed(distill, lambda: distill.run_student("SSL+SL", 100, **kw),
                                       monkeypatch, tmp_path)

    assert_same_publication(whole, resumed, ("test_logits.npy",))
    assert len(whole["history"]) == 3


def test_a_damaged_student_is_a_clear_error(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"PK\x03\x04 truncated")  # written so (its hash matches): not a torch file
    manifest = {"folder": str(tmp_path), "files": {"model.pt": file_hash(tmp_path / "model.pt")}}
    with pytest.raises(RuntimeError, match=r"model\.pt: cannot load this student .*; delete .* to train it again"):
        distill.load_student(manifest)


@pytest.mark.slow
def test_kd_with_lambda_one_is_the_student_from_scratch_bit_for_bit(setup):  # noqa: F811
    """With kd_lambda = 1 the distillation term has weight 0: the same seed must give the scratch run's
    weights and logits exactly, so any gain of distillation is the teacher's, not a change of the loop."""
    profile, root, meta, _ = setup
    settings = replace(profile.student, n_mels=32, cache_features=False, dir_p=0.4, min_passes=0, kd_lambda=1.0,
                       recipe=Recipe(epochs=2, steps_per_epoch=2, batch_size=8, lr=1e-3, optimizer="adam"))
    mans = {"SSL+SL": _run(setup, "SSL+SL")}
    kw = dict(meta=meta, split_part=read_split(root, 100, meta), test_part=read_split(root, "test", meta),
              w32=dataset.waves(meta, 32000, profile), manifests=mans, settings=settings, root=root,
              profile=profile.name, seed=0, device="cpu", progress=False)
    scratch, kd = distill.run_student(None, 100, **kw), distill.run_student("SSL+SL", 100, **kw)
    assert kd["teacher"] == "SSL+SL" and scratch["key"] != kd["key"]
    a, b = (np.load(Path(m["folder"]) / "test_logits.npy") for m in (scratch, kd))
    assert np.array_equal(a, b)
    wa, wb = (distill.load_student(m).state_dict() for m in (scratch, kd))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [h["loss"] for h in scratch["history"]] == [h["loss"] for h in kd["history"]]
    # and with the paper's weight the teacher does change the run
    kd2 = distill.run_student("SSL+SL", 100, **{**kw, "settings": replace(settings, kd_lambda=0.02)})
    assert not np.array_equal(a, np.load(Path(kd2["folder"]) / "test_logits.npy"))


@pytest.mark.slow
def test_a_teacher_keeps_its_logits_at_increasing_fit_and_a_student_learns_from_them(setup):  # noqa: F811
    profile, root, meta, ckpts = setup
    settings = replace(profile.teachers, fit_study=(1,), fit_study_splits=(100,))
    kw = dict(meta=meta, split_part=read_split(root, 100, meta), test_part=read_split(root, "test", meta),
              w16=dataset.waves(meta, 16000, profile), checkpoints=ckpts, settings=settings, root=root,
              profile=profile.name, seed=0, device="cpu", progress=False)
    from asc_lib import teachers

    man = teachers.run_teacher("SSL+SL", 100, **kw)
    assert man["fit_study"] == [1] and "train_e1_logits.npy" in man["files"]
    early, kept = teachers.load_logits(man, "train_e1"), teachers.load_logits(man, "train")
    # after epoch 1 of 2, and at the epoch kept: the same weights only if epoch 1 was kept
    assert early.shape == kept.shape and np.array_equal(early, kept) == (man["best_epoch"] == 1)
    assert teachers.run_teacher("SSL", 100, **kw).get("fit_study") == []  # SSL+SL only
    student = replace(profile.student, n_mels=32, cache_features=False, dir_p=0.0, min_passes=0,
                      recipe=Recipe(epochs=1, steps_per_epoch=2, batch_size=8, lr=1e-3, optimizer="adam"))
    m = distill.run_student("SSL+SL", 100, meta=meta, split_part=kw["split_part"], test_part=kw["test_part"],
                            w32=dataset.waves(meta, 32000, profile), manifests={"SSL+SL": man}, settings=student,
                            root=root, profile=profile.name, seed=0, device="cpu", progress=False,
                            logits="train_e1")
    assert m["teacher"] == "SSL+SL after epoch 1" and m["config"]["logits"] == "train_e1"


@pytest.mark.parametrize("knob, value, match", [
    ("temperature", 0.0, r"temperature \(T of the distillation\) must be a finite number > 0, got 0.0"),
    ("temperature", float("nan"), "temperature .* got nan"),
    ("kd_lambda", 1.5, r"kd_lambda \(the weight of the label term\) must be within \[0, 1\], got 1.5"),
    ("kd_lambda", -0.1, "kd_lambda .* got -0.1"),
])
def test_a_temperature_or_kd_lambda_out_of_range_is_refused_before_anything_runs(tmp_path, monkeypatch, knob,
                                                                                 value, match):
    """``-p temperature 0`` made every loss NaN and published chance: now the student chapter's first call
    refuses it, before its teachers (nothing else given here would let them run)."""
    from asc_lib import profiles

    monkeypatch.setenv("ASC_ARTIFACTS", str(tmp_path))
    settings = replace(profiles.get_profile("ci").student, **{knob: value})
    with pytest.raises(ValueError, match=f"student settings: {match}"):
        distill.run_all((100,), meta=None, root=tmp_path, test_part=None, w16=None, w32=None, checkpoints={},
                        teacher_settings=None, settings=settings, profile="ci", seed=0, device="cpu")
    with pytest.raises(ValueError, match=f"student settings: {match}"):
        distill.run_student("SSL", 100, meta=None, split_part=None, test_part=None, w32=None, manifests={},
                            settings=settings, root=tmp_path, profile="ci", seed=0, device="cpu")
    assert list(tmp_path.iterdir()) == []  # no run folder made


def test_a_student_whose_loss_turns_nan_publishes_nothing(setup, monkeypatch):  # noqa: F811
    profile, root, meta, _ = setup
    settings = replace(profile.student, n_mels=32, cache_features=True, dir_p=0.0, min_passes=0,
                       recipe=Recipe(epochs=2, steps_per_epoch=2, batch_size=8, lr=1e-3, optimizer="adam"))
    features = torch.randn(len(meta), 1, 32, 64, generator=torch.Generator().manual_seed(0))  # log-mels, quick
    real, calls = distill.distill_loss, []

    def nan_in_epoch_2(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs) * (float("nan") if len(calls) == 3 else 1.0)

    monkeypatch.setattr(distill, "distill_loss", nan_in_epoch_2)
    with pytest.raises(FloatingPointError, match=r"student scratch 100 % \(run \w{12}\): the loss is nan at epoch 2/2, "
                                                 r"step 1/2") as err:
        distill.run_student(None, 100, meta=meta, split_part=read_split(root, 100, meta),
                            test_part=read_split(root, "test", meta), w32=None, manifests={}, settings=settings,
                            root=root, profile=profile.name, seed=0, device="cpu", features=features, progress=False)
    key = str(err.value).split("(run ")[1][:12]
    folder = artifacts_dir(profile.name) / "students" / f"scratch-split100-{key}"
    assert folder.is_dir() and list(folder.iterdir()) == []  # no manifest, weights, logits, nor epoch 1's checkpoint


def test_oracle_repair_swaps_the_top_logit_with_the_true_class_only_where_the_teacher_is_wrong():
    z = np.array([[3.0, 1.0, 0.5], [0.2, 2.0, 1.5], [0.1, 0.3, 0.9]], dtype=np.float32)
    y = np.array([1, 1, 0])
    fixed = distill.oracle_repair(z, y)
    assert (fixed.argmax(1) == y).all()
    assert fixed[0].tolist() == [1.0, 3.0, 0.5] and fixed[1].tolist() == z[1].tolist()  # right: untouched
    assert fixed[2].tolist() == z[2][[2, 1, 0]].tolist()
    assert np.array_equal(np.sort(fixed, 1), np.sort(z, 1))  # the same values: the same sharpness


def _student_kw(setup, mans, split=100, seed=0):
    profile, root, meta, _ = setup
    settings = replace(profile.student, n_mels=32, cache_features=False, dir_p=0.0, min_passes=0,
                       recipe=Recipe(epochs=2, steps_per_epoch=2, batch_size=8, lr=1e-3, optimizer="adam"))
    return dict(meta=meta, split_part=read_split(root, split, meta), test_part=read_split(root, "test", meta),
                w32=dataset.waves(meta, 32000, profile), manifests=mans, settings=settings, root=root,
                profile=profile.name, seed=seed, device="cpu", progress=False)


def test_a_student_distils_only_on_clips_its_teachers_trained_on_whatever_its_seed(setup, monkeypatch):  # noqa: F811
    """Teachers of seed 0 held out some recordings: a student of another seed must hold out the same ones (its
    own seed's draw would distil on clips the teachers never trained on), and its manifest's accuracy of the
    targets counts only the clips it was taught on."""
    mans = {"SSL+SL": _run(setup, "SSL+SL")}
    kw = _student_kw(setup, mans, seed=3)
    held = set(mans["SSL+SL"]["val_recordings"])
    _, drawn = distill.hold_out_recordings(kw["split_part"], kw["settings"].val_fraction, 3)
    assert set(drawn.recording) != held  # else this test could not tell
    asked = []
    real = distill.ensemble_logits
    monkeypatch.setattr(distill, "ensemble_logits", lambda m, mem, part, files: asked.append(files) or real(m, mem, part, files))
    m = distill.run_student("SSL+SL", 100, **kw)
    part = kw["split_part"].set_index("filename")
    assert asked and not set(part.loc[asked[0]].recording) & held
    taught = part.loc[asked[0]]
    z = distill.ensemble_logits(mans, ("SSL+SL",), "train", list(taught.index))
    expect = 100 * distill.macro_accuracy(dataset.labels(taught.reset_index()), z.argmax(1), 10)
    assert m["teacher_on_its_clips"] == pytest.approx(expect)


def test_a_student_keeps_its_last_epochs_test_logits_beside_the_selected_ones(setup, monkeypatch):  # noqa: F811
    """Selection does not change training: the last epoch's logits of a run that kept epoch 1 are those of
    the same run that kept its last epoch."""
    mans = {"SSL": _run(setup, "SSL")}
    real = distill.train

    def forced(best):
        def run(*args, evaluate, **kwargs):
            calls = []

            def scored(model):
                out = evaluate(model)
                calls.append(1)
                return {**out, "val_loss": float(len(calls) if best == "first" else -len(calls))}
            return real(*args, evaluate=scored, **kwargs)
        return run

    last = {}
    for best in ("first", "last"):
        monkeypatch.setenv("ASC_ARTIFACTS", str(Path(mans["SSL"]["folder"]).parents[2] / f"kept-{best}"))
        monkeypatch.setattr(distill, "train", forced(best))
        last[best] = distill.run_student("SSL", 100, **_student_kw(setup, mans))
    assert last["first"]["best_epoch"] == 1 and last["last"]["best_epoch"] == 2
    assert np.array_equal(teachers.load_logits(last["first"], "test_last"), teachers.load_logits(last["last"], "test"))
    assert np.array_equal(teachers.load_logits(last["last"], "test_last"), teachers.load_logits(last["last"], "test"))


def test_oracle_targets_and_consistent_views_are_runs_of_their_own(setup):  # noqa: F811
    profile, root, meta, _ = setup
    mans = {t: _run(setup, t) for t in ("SSL", "SSL+SL")}
    kw = _student_kw(setup, mans)
    plain = distill.run_student(("SSL", "SSL+SL"), 100, **kw)
    oracle = distill.run_student(("SSL", "SSL+SL"), 100, targets="oracle", **kw)
    views = distill.run_student("SSL+SL", 100, views=2, w16=dataset.waves(meta, 16000, profile), **kw)
    assert oracle["teacher_on_its_clips"] == 100 and plain["teacher_on_its_clips"] < 100
    assert oracle["teacher"] == "SSL + SSL+SL, oracle-repaired" and views["teacher"] == "SSL+SL, 2 views"
    assert len({plain["key"], oracle["key"], views["key"]}) == 3 and "targets" not in plain["config"]
    assert views["config"]["views"] == 2 and len(views["history"]) == 2
    with pytest.raises(ValueError, match="need a teacher"):
        distill.run_student(None, 100, targets="oracle", **kw)
    with pytest.raises(ValueError, match="choose one"):
        distill.run_student("SSL+SL", 100, targets="oracle", views=2, w16=dataset.waves(meta, 16000, profile), **kw)
