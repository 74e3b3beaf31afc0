"""Unit tests of the library on small data the tests make."""

import numpy as np
import pandas as pd
import pytest
import torch

from asc_lib import complexity, metrics, profiles
from asc_lib.data import DEVICES, SCENES
from asc_lib.data.synthetic import device_response, scene_clip, tour_clips
from asc_lib.features import StudentLogMel, beats_fbank, student_logmel, student_logmel_all
from asc_lib.models.tiny import TinyCNN
from asc_lib.repro import resolve_device, seed_everything
from asc_lib.train import fit, predict


def test_labels_follow_the_baseline_order():
    assert SCENES[0] == "airport" and SCENES[-1] == "tram" and len(SCENES) == 10
    assert DEVICES == ("a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6")


def test_scene_clip_is_a_pure_function_of_its_seed():
    a = scene_clip("bus", "a", seed=[0, 1, 2])
    b = scene_clip("bus", "a", seed=[0, 1, 2])
    c = scene_clip("bus", "a", seed=[0, 1, 3])
    assert a.dtype == np.float32 and a.shape == (32000,)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.abs(a).max() <= 1.0 and 0.005 < np.sqrt(np.mean(a**2)) < 0.2


def test_scene_clip_rejects_unknown_labels():
    with pytest.raises(ValueError, match="unknown scene 'beach'"):
        scene_clip("beach", "a", seed=0)
    with pytest.raises(ValueError, match="unknown device 'z'"):
        scene_clip("bus", "z", seed=0)


def test_devices_differ_and_a_is_the_flattest():
    n, sr = 32000, 32000
    f = np.fft.rfftfreq(n, 1 / sr)
    band = (f > 500) & (f < 5000)
    spread = {d: np.std(20 * np.log10(device_response(d, sr, n)[0][band])) for d in DEVICES}
    assert spread["a"] == min(spread.values())
    assert not np.allclose(device_response("b", sr, n)[0], device_response("c", sr, n)[0])


def test_tour_clips_cover_every_scene_and_device_in_both_halves():
    for devices in (("a", "b"), ("a", "b", "c", "s1", "s2", "s3")):
        waves, scenes, device_idx, is_train = tour_clips(2 * len(devices), devices, sr=8000, seed=1)
        assert waves.shape == (20 * len(devices), 8000)
        assert np.bincount(scenes).tolist() == [2 * len(devices)] * 10
        for half in (is_train, ~is_train):
            assert set(device_idx[half].tolist()) == set(range(len(devices)))
            assert np.bincount(scenes[half]).tolist() == [len(devices)] * 10


def test_student_logmel_shape_and_normalisation():
    wave = torch.from_numpy(np.stack([scene_clip("park", "a", seed=0), scene_clip("bus", "b", seed=1)]))
    x = student_logmel(wave, n_mels=256)
    # pre-emphasis drops one sample: 31,999 samples, hop 500, centred frames -> 64
    assert x.shape == (2, 256, 64)
    assert torch.isfinite(x).all()
    silent = student_logmel(torch.zeros(1, 32000), n_mels=64)
    assert torch.allclose(silent, torch.full_like(silent, (np.log(1e-5) + 4.5) / 5), atol=1e-6)
    assert StudentLogMel(n_mels=128)(wave).shape == (2, 1, 128, 64)
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        student_logmel(torch.zeros(32000))


def test_student_logmel_puts_a_tone_in_the_right_band():
    t = torch.arange(32000) / 32000
    low = student_logmel(torch.sin(2 * torch.pi * 200 * t)[None], n_mels=64)
    high = student_logmel(torch.sin(2 * torch.pi * 8000 * t)[None], n_mels=64)
    assert low.mean(-1).argmax() < high.mean(-1).argmax()


def test_beats_fbank_frames_and_rate():
    x = beats_fbank(torch.zeros(2, 16000) + 1e-3)
    assert x.shape == (2, 98, 128)  # 1 s at 16 kHz, 25 ms windows, 10 ms shift
    with pytest.raises(ValueError, match="16 kHz"):
        beats_fbank(torch.zeros(1, 32000), sr=32000)


def test_macro_accuracy_averages_classes_not_examples():
    y_true = np.array([0, 0, 0, 0, 1])
    y_pred = np.array([0, 0, 0, 0, 0])
    assert metrics.macro_accuracy(y_true, y_pred, 2) == pytest.approx(0.5)  # plain accuracy would be 0.8
    assert metrics.confusion(y_true, y_pred, 2).tolist() == [[4, 0], [1, 0]]
    by_group = metrics.group_accuracy(y_true, y_pred, np.array([0, 0, 1, 1, 1]), 2)
    assert by_group[0] == pytest.approx(1.0) and by_group[1] == pytest.approx(0.5)


def test_param_bytes_at_int8_and_float32():
    model = torch.nn.Linear(10, 5)  # 55 parameters
    assert complexity.count_params(model) == 55
    assert complexity.param_bytes(model, bits=8) == 55
    assert complexity.param_bytes(model, bits=32) == 220


def test_profiles_and_overrides():
    ci = profiles.get_profile("ci")
    assert ci.device == "cpu" and ci.threads
    changed = profiles.override(ci.tour, epochs=3, clips_per_scene=None)
    assert changed.epochs == 3 and changed.clips_per_scene == ci.tour.clips_per_scene
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        profiles.get_profile("fast")
    with pytest.raises(ValueError, match="unknown setting"):
        profiles.override(ci.tour, nonsense=1)


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA"):
            resolve_device("cuda")


def _train_once(seed):
    gen = seed_everything(seed, threads=1)
    x = torch.randn(64, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    y = (x.mean(dim=(1, 2, 3)) > 0).long()
    model = TinyCNN(n_classes=2, width=4)
    history = fit(model, x, y, epochs=3, batch_size=16, lr=1e-2, device=torch.device("cpu"), generator=gen)
    return history, predict(model, x, device=torch.device("cpu"))


def test_training_repeats_exactly_with_the_same_seed():
    h1, p1 = _train_once(0)
    h2, p2 = _train_once(0)
    h3, _ = _train_once(1)
    assert h1 == h2 and np.array_equal(p1, p2)
    assert h1 != h3
    assert len(h1) == 3 and h1[-1]["loss"] < h1[0]["loss"]


def test_glue_records_numpy_scalars_as_python_numbers(monkeypatch):
    from asc_lib import glue as shim

    seen = {}
    monkeypatch.setattr(shim, "_glue", lambda name, value, display: seen.update({name: value}))
    shim.glue("acc", np.float64(72.5))
    shim.glue("n", np.int64(3))
    shim.glue("label", "ok")
    assert seen == {"acc": 72.5, "n": 3, "label": "ok"}
    assert type(seen["acc"]) is float and type(seen["n"]) is int


def test_beats_fbank_matches_kaldi_with_the_official_constants():
    from asc_lib.dsp import kaldi_fbank
    from asc_lib.features import BEATS_FBANK_MEAN, BEATS_FBANK_STD, BeatsFbank

    wave = torch.from_numpy(np.stack([scene_clip("tram", "a", seed=3, sr=16000)]))
    direct = kaldi_fbank(wave[0] * 2**15, n_mels=128, sr=16000.0)  # equal to torchaudio's: tests/test_dsp.py
    expected = (direct - BEATS_FBANK_MEAN) / (2 * BEATS_FBANK_STD)
    assert torch.allclose(BeatsFbank()(wave)[0], expected, atol=1e-5)


def test_linear_probe_separates_separable_classes_and_not_noise():
    from asc_lib.probe import linear_probe, pca_2d

    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 4
    centres = torch.randn(4, 16, generator=g) * 3
    x = centres[y] + torch.randn(200, 16, generator=g)
    acc = lambda pred: metrics.macro_accuracy(y[100:].numpy(), pred, 4)
    assert acc(linear_probe(x[:100], y[:100], x[100:], n_classes=4)) > 0.95
    noise = torch.randn(200, 16, generator=g)
    assert acc(linear_probe(noise[:100], y[:100], noise[100:], n_classes=4)) < 0.5
    xy = pca_2d(x)
    assert xy.shape == (200, 2) and np.var(xy[:, 0]) >= np.var(xy[:, 1])


def test_bootstrap_resamples_whole_locations_and_pairs_the_systems():
    y = np.repeat(np.arange(2), 20)  # 2 classes, 4 locations per class, 5 clips each
    where = np.repeat(np.arange(8), 5)
    perfect, worse = y.copy(), y.copy()
    worse[where == 0] = 1  # every clip of location 0 wrong
    b = metrics.bootstrap_macro(y, np.stack([perfect, worse]), where, 2, n_boot=500, seed=0)
    assert b.shape == (2, 500) and np.all(b[0] == 100)
    lo, hi = metrics.interval(b[1])
    assert lo < 100 * metrics.macro_accuracy(y, worse, 2) < hi <= 100
    # a resample holds each drawn location wholly: with k draws of location 0 among n draws of class 0's
    # locations, class 0 scores 1 - k/n (class 1 always 1, or absent from the resample), never a share of one
    steps = {(k, n) for n in range(1, 9) for k in range(n + 1)}
    assert set(np.round(b[1], 6)) <= {round(100 - f * k / n, 6) for k, n in steps for f in (50, 100)}
    assert np.all(b[1] <= b[0])  # paired: the same resamples for both rows
    again = metrics.bootstrap_macro(y, worse, where, 2, n_boot=500, seed=0)
    assert np.array_equal(again[0], b[1])


def test_kernels_are_pinned_before_torch_loads():
    import os
    import subprocess
    import sys

    from asc_lib.kernels import PINNED_ENV, applies

    if not applies():
        pytest.fail("the test machines are x86-64: pinning must apply here")
    code = "import asc_lib, torch; from asc_lib.kernels import kernels_status; print(kernels_status())"
    env = {k: v for k, v in os.environ.items() if k not in PINNED_ENV and k != "ASC_KERNELS"}
    pinned = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert pinned.stdout.strip() == "CPU kernels pinned (torch and oneDNN: AVX2; MKL: compatible; NumPy: no AVX-512)"
    late = subprocess.run([sys.executable, "-c", "import torch; torch.zeros(1).sum(); " + code], env=env,
                          capture_output=True, text=True, check=True)  # torch first: too late on AVX-512
    native = subprocess.run([sys.executable, "-c", code], env={**env, "ASC_KERNELS": "native"},
                            capture_output=True, text=True, check=True)
    assert "not pinned" in native.stdout
    assert late.stdout.startswith("CPU kernels") and ("NOT pinned" in late.stdout) == ("AVX512" in late.stdout)


def _seeds_table(margin_ssl):
    """A seed study in long format where every claim holds by 2 points, except SSL - scratch = margin_ssl[seed]."""
    from asc_lib import results

    base = {"teacher: scratch": 30, "teacher: SSL*": 34, "teacher: SSL": 36, "teacher: SSL+SL": 40,
            f"teacher: {results.ENSEMBLE}": 44, "student: from scratch": 30, "student: KD from SSL+SL": 32,
            results.SUBMISSION: 33, f"{results.SUBMISSION}, INT8": 32.5}
    rows = []
    for seed, m in enumerate(margin_ssl):
        for split in (5, 100):
            for system, acc in base.items():
                if system == "teacher: SSL":
                    acc = 30 + m
                if system == "teacher: SSL+SL" and split == 5:
                    acc += 4  # the gain over scratch is larger on the small split
                rows.append({"system": system, "split": split, "seed": seed, "accuracy": acc})
    return pd.DataFrame(rows)


def _seed_predictions(margin_ssl):
    """Predictions of every system the claims need, on 600 test clips at 60 locations, per seed: each
    system right on a fixed share of the clips (``_seeds_table``'s accuracies, SSL's from ``margin_ssl``);
    the ensemble predicts exactly as SSL+SL, INT8 exactly as the submission."""
    from asc_lib import results

    y = np.arange(600) % 10
    where = np.arange(600) // 10
    table = _seeds_table(margin_ssl)
    preds = {}
    for r in table.itertuples():
        if r.system in (f"teacher: {results.ENSEMBLE}", f"{results.SUBMISSION}, INT8"):
            continue
        right = np.random.default_rng([r.seed, r.split, len(preds)]).random(600) < r.accuracy / 100
        preds[r.seed, r.system, r.split] = np.where(right, y, (y + 1) % 10)
    for (seed, system, split), p in list(preds.items()):
        if system == "teacher: SSL+SL":
            preds[seed, f"teacher: {results.ENSEMBLE}", split] = p
        if system == results.SUBMISSION:
            preds[seed, f"{results.SUBMISSION}, INT8", split] = p
    return preds, y, where


def test_a_claim_holds_only_when_its_paired_interval_is_above_zero_on_every_seed():
    from asc_lib import results

    preds, y, where = _seed_predictions([40, 40, -25])  # SSL 70, 70 and 5 % against scratch's 30
    verdicts = results.claim_verdicts(preds, y, where, 10, n_boot=300)
    seeds = pd.DataFrame([{"system": k[1], "split": k[2], "seed": k[0],
                           "accuracy": 100 * (p == y).mean()} for k, p in preds.items()])
    table = results.claims_table(seeds, verdicts)
    ssl = table.loc["self-supervised pre-training alone helps: SSL beats scratch"]
    assert (ssl.seeds_holding, ssl.seeds_reversed, ssl.seeds_not_resolved) == ("2/3", "1/3", "0/3") and not ssl.holds
    # the ensemble predicts as SSL+SL: below SSL where SSL is the best member (seeds 0, 1), and a margin
    # of exactly 0, not resolved, where SSL+SL is (seed 2)
    ens = table.loc["the three-teacher ensemble beats its best member"]
    assert (ens.seeds_holding, ens.seeds_reversed, ens.seeds_not_resolved) == ("0/3", "2/3", "1/3")
    assert verdicts.loc[("the three-teacher ensemble beats its best member", 2), "margin"] == 0
    int8 = table.loc[[c for c in table.index if c.startswith("INT8")][0]]  # 1 + 0: holds, whatever the resample
    assert int8.seeds_holding == "3/3" and int8.holds
    v = verdicts.loc["self-supervised pre-training alone helps: SSL beats scratch"]
    assert (v.low <= v.margin).all() and (v.margin <= v.high).all()


def test_the_seed_studys_predictions_are_written_whole_and_read_back(tmp_path):
    from asc_lib import results

    preds, y, where = _seed_predictions([6, 6, 6])
    path = results.save_predictions(tmp_path / "seeds_predictions.npz", preds, y, where)
    back, y2, where2 = results.read_predictions(path)
    assert back.keys() == preds.keys() and all(np.array_equal(back[k], preds[k]) for k in preds)
    assert np.array_equal(y2, y) and list(where2) == [str(w) for w in where]
    assert [p.name for p in tmp_path.iterdir()] == ["seeds_predictions.npz"]  # no temporary file left


def test_a_seed_study_missing_a_row_or_with_a_duplicate_or_an_empty_cell_is_refused(tmp_path):
    """One seed-1 row removed moved a mean and a claim's margin; seed 2 cut to one row dropped claims to 2/3;
    a duplicated row was pandas' "non-unique multi-index". Each is refused, naming the file, the seed and the
    row: by the Results chapter's claims table, and by ``bench/seeds.py --keep`` before it trains anything."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from asc_lib import results

    whole = _seeds_table([6, 6, 6])  # 3 seeds x 2 splits x 9 systems, in that order
    one_less = whole.drop(index=whole.index[(whole.seed == 1) & (whole.system == "teacher: SSL+SL")
                                            & (whole.split == 100)])
    seed2_one_row = pd.concat([whole[whole.seed != 2], whole[whole.seed == 2].head(1)])
    duplicated = pd.concat([whole, whole.iloc[[3]]])  # seed 0's SSL+SL at 5 % again, as the last line
    empty = whole.assign(accuracy=whole.accuracy.where(whole.index != 20))  # seed 1's SSL at 5 %
    study = tmp_path / "results" / "seeds.csv"
    study.parent.mkdir()
    for table, says in (
            (one_less, r"seed 1 has no row for 'teacher: SSL\+SL' at split 100, which seeds 0, 2 have"),
            (seed2_one_row,
             r"seed 2 has no row for 'teacher: SSL\*' at split 5 \(and 16 more\), which seeds 0, 1 have"),
            (duplicated, r"seed 0 has 2 rows for 'teacher: SSL\+SL' at split 5 \(lines 5, 56\)"),
            (empty, r"line 22 \(seed 1, 'teacher: SSL' at split 5\) has no accuracy")):
        table.to_csv(study, index=False)
        with pytest.raises(ValueError, match=f"{study}: {says}"):
            results.read_seeds(study)
        with pytest.raises(ValueError, match=says):  # the Results chapter: the margins of the table it read
            results.claim_margins(pd.read_csv(study))
    keep = subprocess.run([sys.executable, str(Path(__file__).resolve().parent.parent / "bench" / "seeds.py"),
                           "--seeds", "0", "3", "--keep"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "ASC_ARTIFACTS": str(tmp_path / "artifacts")})
    assert keep.returncode != 0
    assert f"--keep: {study}: line 22 (seed 1, 'teacher: SSL' at split 5) has no accuracy" in keep.stderr
    assert not (tmp_path / "artifacts").exists()  # refused before it prepared anything
    whole.to_csv(study, index=False)
    pd.testing.assert_frame_equal(results.claim_margins(results.read_seeds(study)), results.claim_margins(whole))

def test_verdicts_say_when_the_test_set_cannot_tell():
    from asc_lib import results

    y = np.repeat(np.arange(2), 100)
    where = np.arange(200) // 5  # 40 locations of 5 clips
    good, same = y.copy(), y.copy()
    good[:10], same[10:20] = 1 - y[:10], 1 - y[10:20]  # both wrong on 10 clips, of different locations
    bad = np.where(where % 2 == 0, 1 - y, y)  # wrong on every other location
    preds = {"good": {5: good}, "same": {5: same}, "bad": {5: bad}}
    v = results.verdicts(preds, [("good beats bad", "good", "bad"), ("good beats same", "good", "same"),
                                 ("bad beats good", "bad", "good")], y, where, 2)
    assert v.verdict.tolist() == ["holds", "not resolved", "reversed"]
    assert v.loc["good beats same", "margin"] == 0 and v.loc["good beats same", "low"] < 0 < v.loc["good beats same", "high"]
    assert "+45.0 points" in results.say(v)


def test_convergence_reports_steps_selection_and_the_last_third_drop():
    from asc_lib import results
    from asc_lib.train import Recipe

    def run(val, best):
        return {"history": [{"epoch": i + 1, "val_loss": v} for i, v in enumerate(val)], "best_epoch": best}

    runs = {("flat", 5): run([2.0, 1.0, 0.9, 0.8, 0.81, 0.8], 4),
            ("falling", 100): run([2.0, 1.5, 1.2, 1.0, 0.9, 0.7], 6)}
    table = results.convergence(runs, lambda name, split: Recipe(epochs=6, batch_size=8, lr=1.0,
                                                                 steps_per_epoch=split))
    assert table.loc[("flat", 5), "steps"] == 30 and table.loc[("falling", 100), "steps"] == 600
    assert table.loc[("flat", 5), "last-third drop"] == pytest.approx(0.0)  # 0.8 before and after
    assert table.loc[("falling", 100), "last-third drop"] == pytest.approx(0.3)  # 1.0 -> 0.7
    assert table.loc[("flat", 5), "selected epoch"] == "4/6" and table.loc[("falling", 100), "lowest val loss"] == 0.7
    assert results.still_learning(table["last-third drop"]) == (
        "1 of 2 runs lowered their validation loss by more than 0.02 in the last third of their epochs: falling 100 %")


def test_longer_training_sets_the_side_runs_beside_the_chapters_and_refuses_stale_ones():
    from asc_lib import results

    acc = {"teacher:SSL+SL": (60, 70), "teacher:scratch": (40, 68), "student:scratch": (50, 75),
           "student:SSL+SL": (45, 72)}  # (scale 1, scale 4) on both splits
    conv = pd.DataFrame([{"split": split, "role": role, "scale": k, "test acc": a[i] + split / 100,
                          "ci low": a[i] - 3, "ci high": a[i] + 3, "tail drop": 0.1 / k}
                         for split in (5, 100) for role, a in acc.items() for i, k in enumerate((1, 4))])
    chapters = pd.DataFrame([{"system": results.LONGER_ROLES[r], "split": s, "seed": 0, "accuracy": a[0] + s / 100}
                             for s in (5, 100) for r, a in acc.items()])
    wide, claims = results.longer_training(conv, chapters, "convergence.csv")
    assert list(wide.columns[:3]) == ["1x accuracy", "1x ci", "1x tail drop"] and "4x ci" in wide.columns
    assert wide.loc[("teacher: scratch", 100), "4x accuracy"] == 69 and wide.loc[("teacher: scratch", 5), "1x ci"] == "37.0-43.0"
    pre, kd = results.LONGER_CLAIMS
    assert claims.loc[(pre, 5, 1), "margin"] == pytest.approx(20) and claims.loc[(pre, 5, 1), "verdict"] == "holds"
    assert claims.loc[(pre, 100, 4), "margin"] == pytest.approx(2) and claims.loc[(pre, 100, 4), "verdict"] == "not resolved"
    assert claims.loc[(kd, 5, 1), "margin"] == pytest.approx(-5) and claims.loc[(kd, 5, 1), "verdict"] == "fails"
    assert claims.loc[(kd, 100, 4), "half-width"] == pytest.approx(3) and len(claims) == 8

    moved = chapters.assign(accuracy=chapters.accuracy + (chapters.system == "student: from scratch") * 0.5)
    with pytest.raises(ValueError, match=r"convergence\.csv is stale.*0\.50.*--csv convergence\.csv"):
        results.longer_training(conv, moved, "convergence.csv")
    with pytest.raises(ValueError, match="stale"):  # no scale-1 runs to check against the chapters
        results.longer_training(conv[conv.scale == 4], chapters, "convergence.csv")
    with pytest.raises(ValueError, match="convergence.csv: expected exactly the roles"):
        results.longer_training(conv[conv.role != "teacher:scratch"], chapters, "convergence.csv")


def test_compare_flags_numbers_beyond_the_seed_spread_and_changed_verdicts(tmp_path):
    from asc_lib import book, results

    seeds = _seeds_table([6, 5, 7])  # SSL's accuracy has sd 1 over the seeds; every other system sd 0
    wide = lambda t: (t[t.seed == 0].assign(split=lambda d: d.split.astype(str))
                      .pivot(index="system", columns="split", values="accuracy"))
    w = wide(seeds)
    teachers = w.loc[[i for i in w.index if i.startswith("teacher: ")]].rename(index=lambda n: n[9:])
    student = w.loc[[i for i in w.index if i.startswith("student: ")]].rename(index=lambda n: "student " + n[9:])
    published = results.systems(teachers, student)
    assert set(published.system) == set(seeds.system) and len(published) == len(seeds) // 3

    new = published.copy()
    new.loc[new.system == "teacher: SSL", "accuracy"] += 2.9  # within 3 sd (3 points)
    new.loc[(new.system == "student: from scratch") & (new.split == 5), "accuracy"] += 0.4  # within the floor
    numbers, claims = results.compare(published, new, seeds)
    assert not numbers.moved.any() and not claims["verdict changed"].any()

    new.loc[(new.system == "student: from scratch"), "accuracy"] += 3.0  # KD (32, 33) now below scratch (33.4)
    numbers, claims = results.compare(published, new, seeds)
    assert numbers.moved.sum() == 2 and numbers.loc[("student: from scratch", 5), "difference"] == pytest.approx(3.4)
    changed = claims.index[claims["verdict changed"]].tolist()
    assert changed == ["distillation from the ensemble beats the student from scratch",
                       "distillation from SSL+SL beats the student from scratch"]

    # the command: published tables from a folder, new ones from book/results (here: a fake checkout)
    (tmp_path / "published").mkdir()
    (tmp_path / "book" / "results").mkdir(parents=True)
    teachers.to_csv(tmp_path / "published" / "teachers.csv")
    student.to_csv(tmp_path / "published" / "student.csv")
    teachers.to_csv(tmp_path / "book" / "results" / "teachers.csv")
    student.assign(**{"5": student["5"] + 10}).to_csv(tmp_path / "book" / "results" / "student.csv")
    seeds.to_csv(tmp_path / "book" / "results" / "seeds.csv", index=False)
    assert book.compare(tmp_path, str(tmp_path / "published")) == 1
    student.to_csv(tmp_path / "book" / "results" / "student.csv")
    assert book.compare(tmp_path, str(tmp_path / "published")) == 0
    with pytest.raises(SystemExit, match="git revision"):
        book.compare(tmp_path, "no-such-revision")


def test_student_logmel_all_fills_one_tensor_batch_by_batch():
    waves = torch.randn(7, 32000, generator=torch.Generator().manual_seed(0)).numpy() * 0.1
    got = student_logmel_all(waves, n_mels=32, batch=3, progress=False)  # 7 clips: batches of 3, 3, 1
    want = torch.cat([student_logmel(torch.from_numpy(waves[i:i + 3]), n_mels=32).unsqueeze(1).half()
                      for i in range(0, 7, 3)])
    assert got.dtype == torch.float16 and got.shape == (7, 1, 32, 64) and torch.equal(got, want)


def test_less_with_more_data_names_each_drop_with_its_steps_and_passes():
    from asc_lib import results

    acc = {("scratch", 5): 38.3, ("scratch", 25): 30.3, ("scratch", 100): 64.2, ("SSL", 5): 40.0, ("SSL", 25): 50.0}
    conv = pd.DataFrame([("scratch", 5, 96, 0.0), ("scratch", 25, 96, 0.1), ("scratch", 100, 270, 0.0),
                         ("SSL", 5, 96, 0.0), ("SSL", 25, 96, 0.0)],
                        columns=["run", "split", "steps", "last-third drop"]).set_index(["run", "split"])
    passes = {k: 1.0 for k in acc} | {("scratch", 5): 15.4, ("scratch", 25): 3.1}
    (line,) = results.less_with_more_data(acc, conv, passes)
    assert line.startswith("**scratch** is 38.3 % on the 5 % split but 30.3 % on the 25 % split")
    assert "96 and 96 optimiser steps, 15.4 and 3.1 passes" in line and "still falling" in line


def test_top_confusions_are_the_largest_off_diagonal_shares():
    from asc_lib.data import SCENES
    from asc_lib.data.difficulty import top_confusions

    m = np.diag(np.full(len(SCENES), 10))
    bus, airport, tram = (SCENES.index(s) for s in ("bus", "airport", "tram"))
    m[bus, airport], m[bus, bus] = 3, 7  # 30 % of bus
    m[tram, bus], m[tram, tram] = 1, 9  # 10 % of tram
    got = top_confusions(m, k=2)
    assert [(t, p, round(x)) for t, p, x, _ in got] == [("bus", "airport", 30), ("tram", "bus", 10)]
    assert "engine" in got[1][3] and "engine" not in got[0][3]  # tram and bus share the engine; airport has none


def test_the_miniature_table_sets_each_proportion_beside_the_real_one():
    from asc_lib import paper, results

    t = results.miniature({5: 41.9, 25: 50.3, 100: 60.0}, {5: 160.0, 25: 800.0, 100: 3200.0}, 32000.0,
                          "32,000", 0.5, 1_900_000, 126_858, teacher_fit={("SSL+SL", 5): 97.5},
                          teacher_passes={5: 30.0}).set_index("quantity")
    assert t.loc["student alone, 100 % (macro %)"].tolist() == ["60.0", "57.0 (DCASE2024 baseline)"]
    assert t.loc["student alone, gain from 5 to 100 % (points)", "ci"] == "+18.1"
    assert t.loc["pre-training audio / the 100 % split (seconds)", "ci"].startswith("10.0x")
    assert t.loc["pre-training audio / the 100 % split (seconds)", "real"].startswith(
        f"~{paper.AS2M_SECONDS / paper.TRAIN_CLIPS[100]:,.0f}x")
    assert t.loc["pre-training audio / the 5 % split (seconds)", "ci"].startswith("200.0x")
    assert t.loc["teacher SSL+SL, 5 %: accuracy on the clips it teaches (%)", "ci"] == "97.5"
    assert t.loc["teacher / student parameters", "ci"].startswith("15x")
    assert len(results.miniature({5: 40.0, 100: 55.0}, {5: 1.0, 100: 2.0}, 20.0, "x", 0.5, 2, 1)) == 8


def test_gains_are_paired_over_locations_with_their_verdict():
    from asc_lib import results

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 40)
    where = np.tile(np.arange(40), 10)
    noisy = np.where(rng.random(len(y)) < 0.5, y, rng.integers(0, 10, len(y)))
    g = results.gains({("perfect", 5): y, ("same", 5): noisy}, {5: noisy}, y, where, 10, n_boot=200)
    assert g.loc[("same", 5)].gain == 0 and g.loc[("same", 5)].verdict == "not resolved"
    assert g.loc[("perfect", 5)].gain > 30 and g.loc[("perfect", 5)].verdict == "holds"
    assert g.loc[("perfect", 5)].low <= g.loc[("perfect", 5)].gain <= g.loc[("perfect", 5)].high


def test_each_failed_claim_gets_its_evidence_then_its_verdict():
    """The Results chapter's "why a claim fails": one paragraph per claim that does not hold on every seed,
    computed from the seed study and the ablation; the ensemble's says whether leaving the weakest member
    out would rescue it (issue 40: "pulls the others down" while the claim failed without it too)."""
    from asc_lib import results

    seeds = _seeds_table([6, 6, 6])
    pair = seeds[seeds.system == f"teacher: {results.ENSEMBLE}"].assign(system="teacher: ensemble SSL + SSL+SL",
                                                                         accuracy=39.0)
    seeds = pd.concat([seeds, pair], ignore_index=True)  # without SSL*: 39, below SSL+SL's 40 (42 at 5 %)
    claims = pd.DataFrame({"seeds_holding": ["3/3", "0/3", "1/3"], "seeds_reversed": ["0/3", "2/3", "0/3"],
                           "seeds_not_resolved": ["0/3", "1/3", "2/3"], "margin_mean": [5.0, -2.5, 0.1],
                           "margin_sd": [1.0, 1.2, 2.1], "holds": [True, False, False]},
                          index=["SSL+SL teachers beat the same encoder trained from scratch",
                                 "the three-teacher ensemble beats its best member",
                                 "distillation from SSL+SL beats the student from scratch"])
    ablation = pd.DataFrame({"arm": ["recipe", "oracle"], "variant": ["paper's recipe", "oracle-repaired targets"],
                             "teacher": ["SSL+SL", "SSL+SL"], "split": [5, 5], "gain": [-1.0, 3.0],
                             "verdict": ["not resolved", "holds"], "seeds holding": ["0/3", "2/3"],
                             "student": [39.0, 43.0], "scratch": [40.0, 40.0]})
    ablation.attrs["seeds"] = "0, 1, 2"
    text = results.explain_failures(claims, seeds, ablation)
    parts = text.split("\n\n")
    assert len(parts) == 2 and all("**Verdict:**" in p for p in parts)
    assert parts[0].startswith("**the three-teacher ensemble") and "the claim fails either way" in parts[0]
    assert "without SSL* it is -3.0" in parts[0]  # 39 against SSL+SL's mean of 42 (44 at 5 %, 40 at 100 %)
    level = seeds.assign(accuracy=seeds.accuracy.where(seeds.system != "teacher: ensemble SSL + SSL+SL", 42.5))
    first = results.explain_failures(claims, level, ablation).split("\n\n")[0]
    assert "without SSL* it is +0.5, so SSL* accounts for the loss" in first and "level with SSL+SL" in first
    assert "gains -1.0 points (holds on 0/3 seeds)" in parts[1]
    assert "*oracle-repaired targets*, +3.0 (43.0 % against a student from scratch of 40.0 %; holds on 2/3" in parts[1]
    assert "holds on 1/3 seeds, reversed on 0/3, not resolved on 2/3" in parts[1]


def test_the_ablation_summary_uses_the_books_one_rule_for_holds():
    """A change holds only if it holds on every seed (issue 40): a seed-mean interval above zero with one
    seed of three holding is listed apart, not as holding; the noise line is the seeds' spread."""
    from asc_lib import results

    ablation = pd.DataFrame({
        "arm": ["recipe", "lambda", "steps", "fit"], "variant": ["paper's recipe", "kd_lambda 0.1", "steps x4",
                                                                  "SSL+SL after epoch 2"],
        "teacher": ["SSL+SL"] * 4, "split": [5] * 4, "gain": [2.0, 4.0, 3.0, -9.0],
        "verdict": ["holds", "holds", "holds", "reversed"],
        "seeds holding": ["1/3", "1/3", "3/3", "0/3"], "seeds reversed": ["1/3", "0/3", "0/3", "3/3"],
        "gain by seed": ["0:-4 1:+2 2:+8", "0:+1 1:+2 2:+9", "0:+2 1:+3 2:+4", "0:-8 1:-9 2:-10"],
        "student": [40.0, 42.0, 41.0, 29.0], "scratch": [38.0, 38.0, 38.0, 38.0]})
    ablation.attrs["seeds"] = "0, 1, 2"
    text = results.say_ablation(ablation)
    assert "holds on every seed: steps x4 from SSL+SL (+3.0" in text
    assert "Reversed on every seed: SSL+SL after epoch 2 from SSL+SL (-9.0" in text
    assert "Above zero on the seed mean only: kd_lambda 0.1 from SSL+SL (+4.0" in text
    assert "SSL+SL +2.0 (holds on 1/3 seeds, reversed on 1/3; seed mean: holds)" in text
    assert "standard deviation of 2.7 points" in text  # the rows' sds 6.0, 4.36, 1.0, 1.0: median 2.68
