"""Choosing the dataset, reading its waveforms through the cache, and the difficulty criteria."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from asc_lib import profiles
from asc_lib.data import dataset
from asc_lib.data.difficulty import criteria
from asc_lib.data.tau import DatasetFormatError, read_meta, read_split


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:  # caches and the twin go to a temporary artifacts folder
        mp.setenv("ASC_ARTIFACTS", str(tmp_path_factory.mktemp("artifacts")))
        ci = profiles.get_profile("ci")
        profile = replace(ci, data=replace(ci.data, twin_size="tiny"))
        yield profile, dataset.prepare("", profile, seed=0)


def test_empty_data_root_gives_the_cached_twin(tiny):
    profile, root = tiny
    assert root.name == "tau22-twin-tiny-seed0" and (root / "twin.json").exists()
    assert dataset.prepare("", profile, seed=0) == root  # reused, not rebuilt


def test_a_data_root_that_is_not_tau22_is_refused(tmp_path, tiny):
    (tmp_path / "meta.csv").write_text("filename\tscene_label\tidentifier\tsource_label\n")
    with pytest.raises(DatasetFormatError, match=r"is not a TAU22 folder: expected meta.csv, audio/, split5.csv"):
        dataset.prepare(str(tmp_path), tiny[0])
    assert dataset.prepare(str(tiny[1]), tiny[0]) == tiny[1]  # a TAU22-format folder is used as it is


def test_waves_rows_and_labels_line_up(tiny):
    profile, root = tiny
    meta = read_meta(root)
    w16 = dataset.waves(meta, 16000, profile)
    assert w16.shape == (len(meta), 16000)
    test = read_split(root, "test", meta)
    idx = dataset.rows(meta, test)
    assert (meta.filename.to_numpy()[idx] == test.filename.to_numpy()).all()
    assert dataset.labels(test).max() <= 9 and set(dataset.device_ids(test)) == set(range(9))


def test_measured_device_responses_are_relative_to_device_a(tiny):
    profile, root = tiny
    meta = read_meta(root)
    test = read_split(root, "test", meta)
    freqs, curves = dataset.device_responses(dataset.waves(meta, 16000, profile), test.set_index(dataset.rows(meta, test)), 16000)
    assert freqs[-1] == 8000 and list(curves) == ["a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6"]
    assert np.allclose(curves["a"], 0)
    low = freqs < 60  # every other device rolls off the bass that device a keeps
    assert all(curves[d][low][1:].mean() < -5 for d in curves if d != "a")


def test_difficulty_criteria():
    good = pd.DataFrame({"macro": [40.0, 52.0, 60.0], "baseline": [42.4, 50.29, 56.99], "a": [45.0, 60.0, 70.0],
                         "s4": [30.0, 40.0, 50.0], "s5": [31.0, 41.0, 52.0], "s6": [29.0, 42.0, 51.0]},
                        index=["5 %", "25 %", "100 %"])
    assert [ok for _, ok in criteria(good)] == [True, True, True, True]
    too_easy = good.assign(macro=[45.0, 60.0, 80.0])  # data makes it easy: the old twin's curve
    assert [ok for _, ok in criteria(too_easy)] == [True, False, False, True]
    device_blind = good.assign(s4=[20.0, 40.0, 80.0], s5=[20.0, 40.0, 80.0], s6=[20.0, 40.0, 80.0])
    assert [ok for _, ok in criteria(device_blind)] == [True, True, True, False]
    assert "within 5 points of the baseline's 57.0 %" in criteria(good)[2][0]
