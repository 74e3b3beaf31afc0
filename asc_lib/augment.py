"""Training-time augmentations, in the order of one training step.

    waveform --DIR--> (time roll) --> spectrogram --Freq-MixStyle--> SpecAugment --> mixup

- ``dir_augment``: convolve device-a clips with a random microphone impulse response (MicIRP).
- ``time_roll``: circular shift of each waveform (the DCASE2024 baseline's roll; not in the authors' code).
- ``freq_mixstyle`` / ``mix_freq_stats``: mix per-frequency-bin mean/std with a shuffled batch.
- ``spec_augment``: iid frequency and time masks (torchaudio ``FrequencyMasking``/``TimeMasking`` maths).
- ``mixup`` / ``mixup_loss``: convex mix of inputs; the loss is mixed with the same weight.

Every function takes an explicit ``generator`` (a ``torch.Generator`` or ``None`` for torch's global
one). Random numbers are drawn on the generator's device (the CPU for ``None``) and then moved to the
data, so a CPU generator drives CUDA tensors too and a seed gives the same draws on every device.

Reference code: the authors' ``yqcai888/easy_dcase_task1`` (``util/data_augmentation.py``,
``model/lit_asc.py``, ``config/*.yaml``) and the ``CPJKU/dcase2024_task1_baseline``
(``helpers/utils.py``, ``dataset/dcase24.py``, ``run_training.py``).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from .dsp import fftconvolve

Labels = torch.Tensor | Sequence[torch.Tensor]


def _draw_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _rand(shape: tuple[int, ...], generator: torch.Generator | None,
          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Uniform [0, 1) draws on the generator's device (CPU for ``None``)."""
    return torch.rand(shape, generator=generator, device=_draw_device(generator), dtype=dtype)


def _beta(alpha: float, generator: torch.Generator | None) -> float:
    """One draw of Beta(alpha, alpha) as a Python float; 1.0 when ``alpha <= 0``.

    torch's Beta sampler takes no generator, so a NumPy generator is seeded from ``generator``.
    """
    if alpha <= 0:  # easy_dcase_task1 util/data_augmentation.py FreqMixStyle; baseline helpers/utils.py mixup_data
        return 1.0
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=_draw_device(generator)).item())
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def _randperm(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.randperm(n, generator=generator, device=_draw_device(generator)).to(device)


# --------------------------------------------------------------------------------------------- DIR
def dir_augment(wave: torch.Tensor, is_device_a: torch.Tensor, irs: Sequence[torch.Tensor], p: float,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Device impulse response augmentation on a batch of waveforms.

    Each device-a item, with probability ``p``, is convolved ("full" FFT convolution) with an impulse
    response drawn uniformly from ``irs`` and cut to its first ``T`` samples; the IR is used as
    loaded, without normalisation. Items that are not device a are copied bit for bit.

    wave: (B, T) float; is_device_a: (B,) bool; irs: list of 1-D tensors (the MicIRP responses,
    resampled to the waveform's rate). Returns a new (B, T) tensor. Teachers use p 0.6, the student 0.4.
    """
    if wave.dim() != 2:
        raise ValueError(f"expected waveforms (B, T), got shape {tuple(wave.shape)}")
    if len(irs) == 0:
        raise ValueError("dir_augment needs at least one impulse response")
    batch, length = wave.shape
    # one coin and one IR index per item, drawn for the whole batch so the stream does not depend on
    # which items are device a; easy_dcase_task1 util/data_augmentation.py: device a only, coin < p
    coin = _rand((batch,), generator) < p  # (B,)
    which = torch.randint(0, len(irs), (batch,), generator=generator, device=_draw_device(generator))  # (B,)
    apply = coin.cpu() & is_device_a.detach().to("cpu", torch.bool)  # (B,)
    out = wave.clone()
    for i in torch.nonzero(apply).flatten().tolist():
        ir = irs[int(which[i])].to(device=wave.device, dtype=wave.dtype).flatten()  # (L,)
        # easy_dcase_task1 util/data_augmentation.py: fftconvolve(x, ir, mode="full")[:len(x)]
        out[i] = fftconvolve(wave[i], ir)[:length]
    return out


# ------------------------------------------------------------------------------------------ roll
def time_roll(wave: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Roll each waveform circularly along time by its own integer shift in [-max_shift, max_shift].

    wave: (B, T) or (B, C, T). The baseline rolls by up to 0.1 s (``roll_sec``) in samples of the
    original rate (4410 at 44.1 kHz; 3200 at 32 kHz).
    """
    # CPJKU/dcase2024_task1_baseline dataset/dcase24.py RollDataset: random_integers(-r, r), inclusive
    max_shift = int(max_shift)
    shift = torch.randint(-max_shift, max_shift + 1, (wave.shape[0],), generator=generator,
                          device=_draw_device(generator)).to(wave.device)  # (B,)
    length = wave.shape[-1]
    t = torch.arange(length, device=wave.device)  # (T,)
    src = (t.unsqueeze(0) - shift.unsqueeze(1)) % length  # (B, T): out[b, t] = wave[b, t - shift[b]]
    src = src.view(wave.shape[0], *([1] * (wave.dim() - 2)), length).expand_as(wave)
    return torch.gather(wave, -1, src)


# --------------------------------------------------------------------------------- Freq-MixStyle
def mix_freq_stats(x: torch.Tensor, lam: float | torch.Tensor, perm: torch.Tensor,
                   eps: float = 1e-6) -> torch.Tensor:
    """The deterministic part of Freq-MixStyle: re-colour ``x`` with mixed per-frequency statistics.

    x: (B, C, F, T). Mean and std per item and frequency bin are taken over channel and time (std
    from the unbiased variance plus ``eps``), detached, and mixed with those of ``x[perm]``:
    ``mu_mix = lam * mu + (1 - lam) * mu[perm]``, the same for std. ``lam`` is a scalar or (B, 1, 1, 1).
    """
    # easy_dcase_task1 util/data_augmentation.py FreqMixStyle (= baseline helpers/utils.py mixstyle)
    mu = x.mean(dim=(1, 3), keepdim=True).detach()  # (B, 1, F, 1)
    # 1 / rsqrt, not sqrt() or pow(0.5): both run MKL's vsSqrt, whose last bit depends on the CPU's vendor
    sig = (1 / torch.rsqrt(x.var(dim=(1, 3), keepdim=True) + eps)).detach()  # (B, 1, F, 1), unbiased var
    perm = perm.to(x.device)
    mu_mix = lam * mu + (1 - lam) * mu[perm]  # (B, 1, F, 1)
    sig_mix = lam * sig + (1 - lam) * sig[perm]  # (B, 1, F, 1)
    return (x - mu) / sig * sig_mix + mu_mix  # (B, C, F, T)


def freq_mixstyle(x: torch.Tensor, alpha: float, p: float, generator: torch.Generator | None = None,
                  eps: float = 1e-6, lam_per_sample: bool = False) -> torch.Tensor:
    """Frequency-wise MixStyle: with probability ``p`` (one coin for the whole batch), mix each
    item's per-frequency mean/std with those of a shuffled batch, lambda ~ Beta(alpha, alpha).

    x: (B, C, F, T). Returns ``x`` itself when the coin says no. One lambda for the batch, as in the
    authors' code; ``lam_per_sample=True`` draws one per item, as the DCASE2024 baseline does.
    Teachers: alpha 0.4, p 0.4; student: alpha 0.4, p 0.8.
    """
    # one coin per batch: easy_dcase_task1 util/data_augmentation.py (and baseline helpers/utils.py)
    if float(_rand((1,), generator)) >= p:
        return x
    batch = x.shape[0]
    if lam_per_sample:  # CPJKU/dcase2024_task1_baseline helpers/utils.py: Beta sample of shape (B, 1, 1, 1)
        lam = torch.tensor([_beta(alpha, generator) for _ in range(batch)], dtype=x.dtype,
                           device=x.device).view(batch, 1, 1, 1)
    else:  # easy_dcase_task1 util/data_augmentation.py: one np.random.beta per batch
        lam = _beta(alpha, generator)
    perm = _randperm(batch, generator, x.device)  # (B,)
    return mix_freq_stats(x, lam, perm, eps)


# ----------------------------------------------------------------------------------- SpecAugment
def _mask_iid(x: torch.Tensor, mask_param: int, axis: int, generator: torch.Generator | None,
              mask_value: float) -> torch.Tensor:
    """One iid mask per (item, channel) along ``axis`` (-2 frequency, -1 time); torchaudio maths."""
    if mask_param < 1:  # torchaudio mask_along_axis_iid / baseline models/mel.py: 0 means no masking
        return x
    lead = tuple(x.shape[:-2])  # (B, C)
    size = x.shape[axis]
    # torchaudio.functional.mask_along_axis_iid: width = floor(U * param), start = floor(U' * (size - U * param))
    value = _rand(lead, generator, x.dtype) * mask_param  # (B, C)
    min_value = _rand(lead, generator, x.dtype) * (size - value)  # (B, C)
    start = min_value.long().to(x.device)[..., None, None]  # (B, C, 1, 1)
    end = start + value.long().to(x.device)[..., None, None]  # (B, C, 1, 1)
    idx = torch.arange(size, device=x.device)
    idx = idx.view(size, 1) if axis == -2 else idx.view(1, size)  # broadcasts over (F, T)
    return x.masked_fill((idx >= start) & (idx < end), mask_value)


def _mask_param(setting: int | float, size: int) -> int:
    """``int``: the maximum mask width in bins/frames (baseline ``freqm``/``timem``);
    ``float``: a proportion of the axis, ``round(size * setting)`` (the authors' ``mask_size``)."""
    if isinstance(setting, float):
        return round(size * setting)  # easy_dcase_task1 util/data_augmentation.py SpecAugmentation
    return int(setting)


def spec_augment(x: torch.Tensor, freq_mask: int | float, time_mask: int | float,
                 generator: torch.Generator | None = None, p: float = 1.0,
                 mask_value: float = 0.0) -> torch.Tensor:
    """Frequency masking, then time masking, each an independent mask per item and channel.

    x: (B, C, F, T). ``freq_mask``/``time_mask``: an ``int`` is the mask parameter in bins/frames
    (baseline: ``freqm`` 48, ``timem`` 0); a ``float`` is a proportion of F or T (authors' "SpecAugment
    0.2": ``mask_size`` 0.2, i.e. ``round(0.2 * F)`` and ``round(0.2 * T)``). A mask's width is
    ``floor(U * param)``, so below ``param``; masked cells are set to ``mask_value`` (0, as torchaudio).
    Each of the two maskings runs for the whole batch with probability ``p`` (authors' configs: 1.0).
    With ``p == 1`` and ``generator=None`` the draws are those of torchaudio's
    ``FrequencyMasking(iid_masks=True)`` then ``TimeMasking(iid_masks=True)`` on a CPU tensor.
    """
    if x.dim() != 4:
        raise ValueError(f"expected spectrograms (B, C, F, T), got shape {tuple(x.shape)}")
    n_freq, n_time = x.shape[-2:]
    # easy_dcase_task1 util/data_augmentation.py SpecAugmentation: freq mask then time mask, coin each
    if p >= 1 or float(_rand((1,), generator)) < p:
        x = _mask_iid(x, _mask_param(freq_mask, n_freq), -2, generator, mask_value)
    if p >= 1 or float(_rand((1,), generator)) < p:
        x = _mask_iid(x, _mask_param(time_mask, n_time), -1, generator, mask_value)
    return x


# ----------------------------------------------------------------------------------------- mixup
def mixup(x: torch.Tensor, y: Labels, alpha: float, generator: torch.Generator | None = None
          ) -> tuple[torch.Tensor, Labels, Labels, float]:
    """Mixup with one lambda ~ Beta(alpha, alpha) for the whole batch (1.0 when ``alpha <= 0``).

    x: (B, ...); y: a (B, ...) tensor, or a tuple/list of them (e.g. hard labels and teacher targets),
    all permuted alike. Returns ``(lam * x + (1 - lam) * x[perm], y_a, y_b, lam)`` with
    ``y_a = y`` and ``y_b = y[perm]`` (tuples when ``y`` is). No ``max(lam, 1 - lam)``.

    Knowledge distillation (the student): pass ``y=(labels, teacher_logp)`` so the teacher targets go
    through the same permutation, then mix each term with the same lambda::

        x, (y_a, t_a), (y_b, t_b), lam = mixup(x, (labels, teacher_logp), 0.3, g)
        label_loss = mixup_loss(F.cross_entropy, logits, y_a, y_b, lam)
        kd_loss = mixup_loss(kl, student_logp, t_a, t_b, lam) * T**2

    i.e. ``lam * KL(student, teacher(a)) + (1 - lam) * KL(student, teacher(b))``
    (easy_dcase_task1 ``SoftMixUp`` and ``LitAscWithKnowledgeDistillation``).
    """
    # easy_dcase_task1 util/data_augmentation.py MixUp: lam = np.random.beta(a, a) per batch; randperm
    lam = _beta(alpha, generator)
    perm = _randperm(x.shape[0], generator, x.device)  # (B,)
    x_mixed = lam * x + (1 - lam) * x[perm]  # (B, ...)
    if isinstance(y, torch.Tensor):
        return x_mixed, y, y[perm.to(y.device)], lam
    y_b = type(y)(t[perm.to(t.device)] for t in y)
    return x_mixed, y, y_b, lam


def mixup_loss(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], logits: torch.Tensor,
               y_a: torch.Tensor, y_b: torch.Tensor, lam: float) -> torch.Tensor:
    """``lam * loss_fn(logits, y_a) + (1 - lam) * loss_fn(logits, y_b)``.

    easy_dcase_task1 model/lit_asc.py: the same weighting for the cross-entropy and for the KD term.
    """
    return lam * loss_fn(logits, y_a) + (1 - lam) * loss_fn(logits, y_b)
