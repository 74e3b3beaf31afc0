"""asc_lib.dsp against torchaudio 2.11, whose functions it replaces, and against the maths.

With torchaudio installed (the pinned environment's ``parity`` extra), every output is compared with
torchaudio's live and must be *bit for bit* equal (the book's published numbers were computed with
torchaudio), and the stored reference arrays must still be what torchaudio gives. Without it (the
newest-torch CI leg), the outputs are compared with those stored arrays within float32 tolerances.
Write the arrays again with ``python tests/test_dsp.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from asc_lib import augment, dsp

STORED = Path(__file__).parent / "data" / "dsp_reference.npz"
BANKS = [(256, 4096, 32000.0, 0.0, 16000.0), (128, 512, 16000.0, 20.0, 0.0), (23, 512, 16000.0, 20.0, -400.0)]
RATES = [(44100, 32000), (44100, 16000), (32000, 16000)]


def inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"wave": (rng.uniform(-0.3, 0.3, 12345)).astype(np.float32),  # 16 kHz, not a whole number of frames
            "clips": (0.1 * rng.standard_normal((2, 4410))).astype(np.float32),  # 0.1 s at 44.1 kHz
            "ir": (0.1 * rng.standard_normal(777)).astype(np.float32),
            "spec": rng.standard_normal((5, 2, 24, 33)).astype(np.float32)}


def torchaudio_outputs() -> dict[str, np.ndarray]:
    """What torchaudio 2.11 gives on :func:`inputs` (the reference)."""
    import torchaudio
    import torchaudio.compliance.kaldi as kaldi
    import torchaudio.functional as AF

    x = {k: torch.from_numpy(v) for k, v in inputs().items()}
    out = {"fbank": kaldi.fbank(x["wave"].unsqueeze(0) * 2**15, num_mel_bins=128, sample_frequency=16000,
                                frame_length=25, frame_shift=10)}
    for i, args in enumerate(BANKS):
        out[f"banks{i}"] = kaldi.get_mel_banks(*args, 100.0, -500.0, 1.0)[0]
    for s, r in RATES:
        out[f"resample{s}_{r}"] = torchaudio.transforms.Resample(s, r)(x["clips"])
    out["fftconvolve"] = AF.fftconvolve(x["clips"][0], x["ir"])
    torch.manual_seed(123)  # torchaudio's iid masks draw from the global generator
    out["specaug"] = torchaudio.transforms.TimeMasking(9, iid_masks=True)(
        torchaudio.transforms.FrequencyMasking(6, iid_masks=True)(x["spec"]))
    return {k: v.numpy() for k, v in out.items()}


def ours() -> dict[str, np.ndarray]:
    x = {k: torch.from_numpy(v) for k, v in inputs().items()}
    out = {"fbank": dsp.kaldi_fbank(x["wave"] * 2**15, n_mels=128, sr=16000.0)}
    for i, args in enumerate(BANKS):
        out[f"banks{i}"] = dsp.kaldi_mel_banks(*args)
    for s, r in RATES:
        out[f"resample{s}_{r}"] = dsp.Resampler(s, r)(x["clips"])
    out["fftconvolve"] = dsp.fftconvolve(x["clips"][0], x["ir"])
    torch.manual_seed(123)
    out["specaug"] = augment.spec_augment(x["spec"], 6, 9, generator=None)
    return {k: v.numpy() for k, v in out.items()}


def _torchaudio_or_none():
    try:
        import torchaudio  # noqa: F401
    except Exception:  # absent, or built for another torch ("compiled with different CUDA versions")
        return None
    return torchaudio


def test_equals_torchaudio_bit_for_bit_or_the_stored_arrays_within_float32():
    mine = ours()
    stored = dict(np.load(STORED))
    assert set(stored) == set(mine)
    if _torchaudio_or_none() is not None:
        live = torchaudio_outputs()
        for k in mine:
            assert np.array_equal(mine[k], live[k]), f"{k}: differs from torchaudio"
            assert stored[k].shape == live[k].shape and np.allclose(stored[k], live[k], rtol=1e-6, atol=1e-6), \
                f"{k}: {STORED.name} is stale; write it again with python tests/test_dsp.py"
    for k in mine:
        assert mine[k].shape == stored[k].shape, k
        # the fbank is a log (values up to ~20); everything else is of order 1
        np.testing.assert_allclose(mine[k], stored[k], rtol=1e-5, atol=1e-5, err_msg=k)
    assert np.array_equal(mine["specaug"] == 0, stored["specaug"] == 0)  # the same cells masked


def test_resampler_keeps_a_tone_and_removes_what_the_new_rate_cannot_hold():
    t = torch.arange(44100) / 44100
    for f, r in [(1000.0, 32000), (3000.0, 16000)]:
        y = dsp.resample(torch.sin(2 * math.pi * f * t), 44100, r)
        assert y.shape == (r,)
        ref = torch.sin(2 * math.pi * f * torch.arange(r) / r)
        assert (y - ref)[200:-200].abs().max() < 5e-3  # away from the zero-padded edges (6-zero sinc: ripple ~1e-3)
    alias = dsp.resample(torch.sin(2 * math.pi * 12000.0 * t), 44100, 16000)  # above 8 kHz: filtered out
    assert alias[200:-200].abs().max() < 0.01
    with pytest.raises(ValueError, match="positive integers"):
        dsp.Resampler(44100.5, 16000)


def test_fbank_frames_and_a_tone_lands_in_its_mel_band():
    sr = 16000
    wave = 0.5 * torch.sin(2 * math.pi * 1000.0 * torch.arange(sr) / sr)
    fb = dsp.kaldi_fbank(wave * 2**15, n_mels=128, sr=float(sr))
    assert fb.shape == (1 + (sr - 400) // 160, 128)  # 25 ms frames every 10 ms, edges snipped
    banks = dsp.kaldi_mel_banks(128, 512, float(sr))
    peak_bin = round(1000 / (sr / 512))
    assert fb.mean(0).argmax() == banks[:, peak_bin].argmax()
    silent = dsp.kaldi_fbank(torch.zeros(sr), n_mels=128, sr=float(sr))
    assert torch.all(silent == math.log(dsp.EPS))  # the log floor
    with pytest.raises(ValueError, match="does not fit"):
        dsp.kaldi_fbank(torch.zeros(100), n_mels=128)


def test_mel_banks_are_triangles_on_the_mel_scale():
    banks = dsp.kaldi_mel_banks(40, 1024, 16000.0, 0.0, 8000.0)
    assert banks.shape == (40, 512) and banks.min() == 0 and banks.max() <= 1
    peaks = banks.argmax(1)
    assert torch.all(peaks[1:] > peaks[:-1])  # centres rise
    centres_mel = dsp.mel(peaks * (16000.0 / 1024))
    gaps = centres_mel[1:] - centres_mel[:-1]
    assert gaps.max() - gaps.min() < 2 * dsp.mel(8000.0) / 41  # evenly spaced on the mel scale (within a bin)
    with pytest.raises(ValueError, match="Nyquist"):
        dsp.kaldi_mel_banks(40, 1024, 16000.0, 0.0, 9000.0)


if __name__ == "__main__":
    STORED.parent.mkdir(exist_ok=True)
    np.savez_compressed(STORED, **torchaudio_outputs())
    print(f"wrote {STORED} ({STORED.stat().st_size} bytes)")
