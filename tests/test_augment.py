"""Unit tests of asc_lib.augment: what defines each augmentation, and seeding."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from asc_lib import augment as A


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------- DIR
@pytest.fixture
def batch_dir():
    wave = torch.randn(6, 800, generator=gen(1))
    is_a = torch.tensor([True, False, True, False, True, True])
    irs = [torch.randn(37, generator=gen(2)), torch.randn(64, generator=gen(3))]
    return wave, is_a, irs


def test_dir_leaves_other_devices_bitwise_and_keeps_length(batch_dir):
    wave, is_a, irs = batch_dir
    orig = wave.clone()
    out = A.dir_augment(wave, is_a, irs, p=1.0, generator=gen(0))
    assert out.shape == wave.shape
    assert torch.equal(out[~is_a], orig[~is_a])
    assert torch.equal(wave, orig)  # input untouched, a new tensor comes back
    assert out.data_ptr() != wave.data_ptr()


def test_dir_p1_changes_every_device_a_item_as_full_convolution_cut(batch_dir):
    wave, is_a, irs = batch_dir
    out = A.dir_augment(wave, is_a, irs, p=1.0, generator=gen(0))
    for i in torch.nonzero(is_a).flatten().tolist():
        assert not torch.allclose(out[i], wave[i])
        # the output is the first T samples of the full convolution with one of the IRs
        full = [torch.from_numpy(np.convolve(wave[i].numpy(), ir.numpy()))[:800].float()
                for ir in irs]
        assert any(torch.allclose(out[i], f, atol=1e-4) for f in full)


def test_dir_delta_ir_is_identity_and_p0_is_identity(batch_dir):
    wave, is_a, _ = batch_dir
    delta = torch.zeros(50)
    delta[0] = 1.0
    out = A.dir_augment(wave, is_a, [delta], p=1.0, generator=gen(0))
    assert torch.allclose(out, wave, atol=1e-5)  # no normalisation of the IR in the reference
    shifted = torch.zeros(50)
    shifted[3] = 0.5  # a delayed, scaled delta: delay and scale are kept, the tail is cut
    out = A.dir_augment(wave, is_a, [shifted], p=1.0, generator=gen(0))
    assert torch.allclose(out[is_a, 3:], 0.5 * wave[is_a, :-3], atol=1e-5)
    out0 = A.dir_augment(wave, is_a, [shifted], p=0.0, generator=gen(0))
    assert torch.equal(out0, wave)


def test_dir_partial_p_and_seeds(batch_dir):
    wave, is_a, irs = batch_dir
    wave = wave.repeat(20, 1)
    is_a = is_a.repeat(20)
    out = A.dir_augment(wave, is_a, irs, p=0.5, generator=gen(4))
    changed = (out != wave).any(dim=1)
    assert not changed[~is_a].any()
    assert 0 < changed[is_a].sum() < is_a.sum()  # some device-a items, not all
    assert torch.equal(out, A.dir_augment(wave, is_a, irs, p=0.5, generator=gen(4)))
    assert not torch.equal(out, A.dir_augment(wave, is_a, irs, p=0.5, generator=gen(5)))


# ------------------------------------------------------------------------------------- time roll
def test_time_roll_is_circular_shift_within_range():
    wave = torch.randn(64, 100, generator=gen(0))
    out = A.time_roll(wave, max_shift=7, generator=gen(1))
    shifts = []
    for b in range(wave.shape[0]):
        found = [s for s in range(-7, 8) if torch.equal(out[b], torch.roll(wave[b], s))]
        assert len(found) == 1
        shifts.append(found[0])
    assert len(set(shifts)) > 5  # per-item shifts
    assert min(shifts) == -7 and max(shifts) == 7  # inclusive range, as random_integers
    assert torch.equal(A.time_roll(wave, 0, gen(1)), wave)


def test_time_roll_multichannel_and_seeds():
    wave = torch.randn(8, 2, 50, generator=gen(0))
    out = A.time_roll(wave, 10, gen(3))
    for b in range(8):
        s = [s for s in range(-10, 11) if torch.equal(out[b], torch.roll(wave[b], s, dims=-1))]
        assert len(s) == 1
    assert torch.equal(out, A.time_roll(wave, 10, gen(3)))
    assert not torch.equal(out, A.time_roll(wave, 10, gen(4)))


# --------------------------------------------------------------------------------- Freq-MixStyle
@pytest.fixture
def spec():
    return torch.randn(4, 2, 16, 30, generator=gen(0)) * torch.linspace(0.5, 3, 16).view(1, 1, 16, 1) + 1.0


def test_mixstyle_identity_cases(spec):
    # lam = 1 (alpha 0, as the reference) and p = 0 leave the input unchanged
    assert torch.allclose(A.freq_mixstyle(spec, alpha=0.0, p=1.0, generator=gen(0)), spec, atol=1e-5)
    assert torch.equal(A.freq_mixstyle(spec, alpha=0.4, p=0.0, generator=gen(0)), spec)
    ident = torch.arange(spec.shape[0])
    assert torch.allclose(A.mix_freq_stats(spec, 0.3, ident), spec, atol=1e-5)  # mixing with itself


def test_mixstyle_output_statistics_are_the_mixed_ones(spec):
    lam, perm = 0.3, torch.tensor([2, 0, 3, 1])
    out = A.mix_freq_stats(spec, lam, perm)
    mu = spec.mean(dim=(1, 3), keepdim=True)
    var = spec.var(dim=(1, 3), keepdim=True)
    sig = (var + 1e-6).sqrt()
    mu_mix = lam * mu + (1 - lam) * mu[perm]
    sig_mix = lam * sig + (1 - lam) * sig[perm]
    assert torch.allclose(out.mean(dim=(1, 3), keepdim=True), mu_mix, atol=1e-5)
    assert torch.allclose(out.std(dim=(1, 3), keepdim=True), sig_mix * (var / (var + 1e-6)).sqrt(), rtol=1e-4)
    assert not torch.allclose(out.mean(dim=(1, 3), keepdim=True), mu, atol=1e-2)  # it did change
    # per-sample lambda of shape (B, 1, 1, 1) is broadcast per item
    lam_b = torch.tensor([1.0, 0.0, 1.0, 0.0]).view(4, 1, 1, 1)
    out_b = A.mix_freq_stats(spec, lam_b, perm)
    assert torch.allclose(out_b[0], spec[0], atol=1e-5)
    assert torch.allclose(out_b[1].mean(dim=(0, 2)), mu[perm[1]].flatten(), atol=1e-5)


def test_mixstyle_matches_the_reference_formula_where_eps_matters(spec):
    x = spec * 1e-3  # variance near eps: the unbiased variance and eps placement show
    lam, perm = 0.25, torch.tensor([3, 2, 1, 0])
    mu = x.mean(dim=(1, 3), keepdim=True)
    sig = (x.var(dim=(1, 3), keepdim=True, correction=1) + 1e-6).sqrt()
    ref = (x - mu) / sig * (lam * sig + (1 - lam) * sig[perm]) + lam * mu + (1 - lam) * mu[perm]
    assert torch.allclose(A.mix_freq_stats(x, lam, perm), ref, rtol=1e-5, atol=1e-9)


def test_mixstyle_statistics_carry_no_gradient(spec):
    x = spec.clone().requires_grad_(True)
    lam, perm = 0.5, torch.tensor([1, 0, 3, 2])
    w = torch.randn(spec.shape, generator=gen(9))
    (A.mix_freq_stats(x, lam, perm) * w).sum().backward()
    sig = (spec.var(dim=(1, 3), keepdim=True) + 1e-6).sqrt()
    sig_mix = lam * sig + (1 - lam) * sig[perm]
    # detached statistics: the map is affine in x with slope sig_mix / sig
    assert torch.allclose(x.grad, w * sig_mix / sig, rtol=1e-5, atol=1e-6)


def test_mixstyle_p_per_batch_and_seeds(spec):
    outs = [A.freq_mixstyle(spec, 0.4, 0.5, gen(s)) for s in range(40)]
    untouched = [torch.equal(o, spec) for o in outs]
    assert 0 < sum(untouched) < 40  # the coin is per batch: all or nothing
    assert torch.equal(A.freq_mixstyle(spec, 0.4, 1.0, gen(7)), A.freq_mixstyle(spec, 0.4, 1.0, gen(7)))
    assert not torch.equal(A.freq_mixstyle(spec, 0.4, 1.0, gen(7)), A.freq_mixstyle(spec, 0.4, 1.0, gen(8)))
    per = A.freq_mixstyle(spec, 0.4, 1.0, gen(7), lam_per_sample=True)
    assert per.shape == spec.shape and torch.equal(per, A.freq_mixstyle(spec, 0.4, 1.0, gen(7), lam_per_sample=True))


# ----------------------------------------------------------------------------------- SpecAugment
def test_spec_augment_masks_only_up_to_the_widths():
    x = torch.rand(32, 1, 40, 50, generator=gen(0)) + 1.0  # no zeros before masking
    out = A.spec_augment(x, freq_mask=8, time_mask=0.2, generator=gen(1))  # time: round(0.2 * 50) = 10
    freq_widths, time_widths = [], []
    for b in range(32):
        zero = out[b, 0] == 0
        rows = zero.all(dim=1)  # fully masked frequency bins
        cols = zero.all(dim=0)  # fully masked frames
        # every zero lies in a masked row or column, and everything else is untouched
        assert torch.equal(zero, rows[:, None] | cols[None, :])
        assert torch.equal(out[b, 0][~zero], x[b, 0][~zero])
        for m, limit, widths in ((rows, 8, freq_widths), (cols, 10, time_widths)):
            idx = torch.nonzero(m).flatten()
            if len(idx):
                assert idx[-1] - idx[0] + 1 == len(idx)  # one contiguous band
            assert len(idx) < limit
            widths.append(len(idx))
    assert max(freq_widths) >= 5 and max(time_widths) >= 6  # masks are actually drawn


def test_spec_augment_proportion_is_rounded_share_of_the_axis():
    x = torch.randn(6, 1, 40, 50, generator=gen(0))
    # authors' mask_size 0.2: round(0.2 * 40) = 8 bins, round(0.2 * 50) = 10 frames
    assert torch.equal(A.spec_augment(x, 0.2, 0.2, gen(3)), A.spec_augment(x, 8, 10, gen(3)))
    assert not torch.equal(A.spec_augment(x, 0.2, 0.2, gen(3)), A.spec_augment(x, 9, 11, gen(3)))


def test_spec_augment_zero_p_and_seeds():
    x = torch.randn(4, 1, 20, 30, generator=gen(0))
    assert torch.equal(A.spec_augment(x, 0, 0, gen(0)), x)
    assert torch.equal(A.spec_augment(x, 10, 10, gen(0), p=0.0), x)
    assert torch.equal(A.spec_augment(x, 0.2, 0.2, gen(5)), A.spec_augment(x, 0.2, 0.2, gen(5)))
    assert not torch.equal(A.spec_augment(x, 0.2, 0.2, gen(5)), A.spec_augment(x, 0.2, 0.2, gen(6)))


# ----------------------------------------------------------------------------------------- mixup
def test_mixup_mixes_with_the_permuted_batch():
    x = torch.randn(8, 1, 5, 7, generator=gen(0))
    y = torch.arange(8)  # distinct labels reveal the permutation
    xm, y_a, y_b, lam = A.mixup(x, y, alpha=0.3, generator=gen(1))
    assert 0.0 <= lam <= 1.0 and isinstance(lam, float)
    assert torch.equal(y_a, y) and sorted(y_b.tolist()) == list(range(8))
    assert torch.allclose(xm, lam * x + (1 - lam) * x[y_b], atol=1e-6)
    lams = [A.mixup(x, y, 0.3, gen(s))[3] for s in range(200)]
    assert min(lams) < 0.3 and max(lams) > 0.7  # no max(lam, 1 - lam)
    xm1, _, _, lam1 = A.mixup(x, y, alpha=0.0, generator=gen(1))  # lam = 1: identity
    assert lam1 == 1.0 and torch.equal(xm1, x)


def test_mixup_tuple_targets_share_the_permutation_and_seeds():
    x = torch.randn(6, 3, generator=gen(0))
    y = torch.arange(6)
    t = torch.randn(6, 10, generator=gen(1))
    xm, (ya, ta), (yb, tb), lam = A.mixup(x, (y, t), 0.3, gen(2))
    assert torch.equal(ya, y) and torch.equal(ta, t) and torch.equal(tb, t[yb])
    assert not torch.equal(yb, y)  # a real permutation, applied to both targets
    again = A.mixup(x, (y, t), 0.3, gen(2))
    assert torch.equal(again[0], xm) and again[3] == lam
    other = A.mixup(x, (y, t), 0.3, gen(3))
    assert not torch.equal(other[0], xm)


def test_mixup_loss_is_the_weighted_sum():
    logits = torch.randn(8, 10, generator=gen(0))
    y_a = torch.randint(0, 10, (8,), generator=gen(1))
    y_b = torch.randint(0, 10, (8,), generator=gen(2))
    lam = 0.37
    manual = lam * F.cross_entropy(logits, y_a) + (1 - lam) * F.cross_entropy(logits, y_b)
    assert torch.allclose(A.mixup_loss(F.cross_entropy, logits, y_a, y_b, lam), manual)
    # the weights sum to 1: a constant loss comes back unchanged
    assert A.mixup_loss(lambda _l, _y: torch.tensor(2.5), logits, y_a, y_b, lam).item() == pytest.approx(2.5)
    assert torch.allclose(A.mixup_loss(F.cross_entropy, logits, y_a, y_b, 1.0), F.cross_entropy(logits, y_a))
