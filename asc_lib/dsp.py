"""The signal processing the book used to take from torchaudio, written here in plain torch.

torchaudio is in maintenance mode (2.11 is its last release) and fails to import beside newer torch
builds, so asc_lib carries its own versions of the four things it needs. Each follows the published
definition and the same arithmetic, step for step and in the same dtypes, as the torchaudio 2.11
function named beside it, so that the book's numbers stay bit for bit what they were
(``tests/test_dsp.py`` checks this against torchaudio when it is installed, and against stored arrays
when it is not):

- :func:`kaldi_mel_banks`: Kaldi's triangular mel filters (``compliance.kaldi.get_mel_banks``).
- :func:`kaldi_fbank`: Kaldi's log mel filterbank, the input BEATs was trained on (``compliance.kaldi.fbank``
  with its defaults: povey window, no dithering, DC removal, pre-emphasis 0.97, snipped edges, frames
  zero-padded to a power of two, power spectrum, log floored at float32's epsilon).
- :class:`Resampler`: band-limited resampling with a Hann-windowed sinc (``transforms.Resample`` with its
  defaults: 6 zero crossings, roll-off 0.99, the kernel computed in float64 and kept in float32).
- :func:`fftconvolve`: linear convolution through the FFT (``functional.fftconvolve``, mode "full").

All take tensors on any device.
"""

from __future__ import annotations

import math

import torch

EPS = torch.finfo(torch.float32).eps  # Kaldi's floor for the log and the energy


# --------------------------------------------------------------------------------------- mel scale
def mel(freq):
    """Kaldi's mel scale, ``1127 ln(1 + f / 700)`` (a float or a tensor of Hz)."""
    if isinstance(freq, torch.Tensor):
        return 1127.0 * (1.0 + freq / 700.0).log()
    return 1127.0 * math.log(1.0 + freq / 700.0)


def kaldi_mel_banks(n_mels: int, n_fft: int, sr: float, fmin: float = 20.0, fmax: float = 0.0) -> torch.Tensor:
    """Triangular filters, (n_mels, n_fft // 2): equally spaced on the mel scale between ``fmin`` and
    ``fmax`` (``fmax <= 0`` counts back from the Nyquist frequency), each rising from its left neighbour's
    centre to its own and falling to its right neighbour's, evaluated at the FFT bins' frequencies.
    The Nyquist bin is left out, as Kaldi does (callers pad a zero column)."""
    if n_mels <= 3 or n_fft % 2:
        raise ValueError(f"need more than 3 mel bins and an even FFT size, got {n_mels} and {n_fft}")
    nyquist = 0.5 * sr
    high = fmax + nyquist if fmax <= 0.0 else fmax
    if not (0.0 <= fmin < nyquist and 0.0 < high <= nyquist and fmin < high):
        raise ValueError(f"mel band {fmin}..{high} Hz does not fit below the Nyquist frequency {nyquist} Hz")
    mel_lo, mel_hi = mel(fmin), mel(high)
    delta = (mel_hi - mel_lo) / (n_mels + 1)
    i = torch.arange(n_mels).unsqueeze(1)  # (n_mels, 1); int * float gives float32, as in Kaldi's port
    left = mel_lo + i * delta
    centre = mel_lo + (i + 1.0) * delta
    right = mel_lo + (i + 2.0) * delta
    m = mel((sr / n_fft) * torch.arange(n_fft / 2)).unsqueeze(0)  # (1, n_fft // 2) bin frequencies on the mel scale
    up = (m - left) / (centre - left)
    down = (right - m) / (right - centre)
    return torch.max(torch.zeros(1), torch.min(up, down))


# ------------------------------------------------------------------------------------------ fbank
def _povey(size: int, device, dtype) -> torch.Tensor:
    """Kaldi's default window: a symmetric Hann window raised to the power 0.85."""
    return torch.hann_window(size, periodic=False, device=device, dtype=dtype).pow(0.85)


def kaldi_fbank(wave: torch.Tensor, n_mels: int = 23, sr: float = 16000.0, frame_length_ms: float = 25.0,
                frame_shift_ms: float = 10.0, fmin: float = 20.0, fmax: float = 0.0) -> torch.Tensor:
    """Log mel filterbank of one waveform (T,) -> (frames, n_mels), as Kaldi's ``compute-fbank-feats``.

    Frames of ``frame_length_ms`` every ``frame_shift_ms`` that fit wholly in the signal ("snip edges");
    each frame has its mean removed, is pre-emphasised (``x[n] - 0.97 x[n-1]``, the first sample
    against itself), multiplied by the povey window and zero-padded to the next power of two; then
    ``log(max(|FFT|^2 @ banks, eps))``. No dithering (torchaudio's default; Kaldi's own is 1.0).
    """
    if wave.dim() != 1:
        raise ValueError(f"expected one waveform (T,), got shape {tuple(wave.shape)}")
    shift = int(sr * frame_shift_ms * 0.001)
    size = int(sr * frame_length_ms * 0.001)
    if not 2 <= size <= len(wave) or shift < 1:
        raise ValueError(f"a {size}-sample frame every {shift} samples does not fit a {len(wave)}-sample waveform")
    padded = 2 ** (size - 1).bit_length()  # the next power of two
    n_frames = 1 + (len(wave) - size) // shift
    frames = wave.as_strided((n_frames, size), (shift * wave.stride(0), wave.stride(0)))
    frames = frames - frames.mean(dim=1).unsqueeze(1)  # remove the DC offset
    previous = torch.nn.functional.pad(frames.unsqueeze(0), (1, 0), mode="replicate").squeeze(0)[:, :-1]
    frames = frames - 0.97 * previous  # pre-emphasis
    frames = frames * _povey(size, wave.device, wave.dtype).unsqueeze(0)
    frames = torch.nn.functional.pad(frames.unsqueeze(0), (0, padded - size)).squeeze(0)
    power = torch.fft.rfft(frames).abs().pow(2.0)  # (frames, padded // 2 + 1)
    banks = kaldi_mel_banks(n_mels, padded, sr, fmin, fmax).to(device=wave.device, dtype=wave.dtype)
    banks = torch.nn.functional.pad(banks, (0, 1))  # no weight on the Nyquist bin
    return torch.max(torch.mm(power, banks.T), torch.tensor(EPS, device=wave.device, dtype=wave.dtype)).log()


# ------------------------------------------------------------------------------------- resampling
class Resampler(torch.nn.Module):
    """Band-limited resampling from ``source_sr`` to ``sr`` Hz (integers), for waveforms (..., T).

    Reconstruct ``x(t) = sum_i x[i] sinc(pi f_s (t - i / f_s))`` and sample it at ``j / sr``; the sinc is
    cut off at ``rolloff * min(source_sr, sr)`` (anti-aliasing) and truncated after ``zeros`` zero
    crossings under a Hann window. With both rates divided by their gcd (g), output ``j + sr/g`` uses
    the same filter as ``j``, shifted by ``source_sr/g`` input samples, so the ``sr/g`` filters are one
    strided convolution. Output length ``ceil(T sr / source_sr)``.
    """

    def __init__(self, source_sr: int, sr: int, zeros: int = 6, rolloff: float = 0.99):
        super().__init__()
        if int(source_sr) != source_sr or int(sr) != sr or source_sr <= 0 or sr <= 0:
            raise ValueError(f"sample rates must be positive integers, got {source_sr} and {sr}")
        g = math.gcd(int(source_sr), int(sr))
        self.orig, self.new = int(source_sr) // g, int(sr) // g
        cutoff = min(self.orig, self.new) * rolloff
        self.width = math.ceil(zeros * self.orig / cutoff)
        idx = torch.arange(-self.width, self.width + self.orig, dtype=torch.float64)[None, None] / self.orig
        t = torch.arange(0, -self.new, -1)[:, None, None] / self.new + idx  # (new, 1, taps), in input periods
        t = (t * cutoff).clamp_(-zeros, zeros)
        window = torch.cos(t * math.pi / zeros / 2) ** 2
        t = t * math.pi
        kernel = torch.where(t == 0, torch.tensor(1.0).to(t), t.sin() / t)
        kernel *= window * (cutoff / self.orig)
        self.register_buffer("kernel", kernel.float(), persistent=False)
        self.same = self.orig == self.new

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if self.same:
            return wave
        shape = wave.shape
        x = wave.reshape(-1, shape[-1])
        x = torch.nn.functional.pad(x, (self.width, self.width + self.orig))
        y = torch.nn.functional.conv1d(x[:, None], self.kernel.to(x), stride=self.orig)  # (N, new, steps)
        length = int(torch.ceil(torch.tensor(self.new * shape[-1] / self.orig)))  # in float32, as torchaudio
        y = y.transpose(1, 2).reshape(len(x), -1)[..., :length]
        return y.reshape(shape[:-1] + y.shape[-1:])


def resample(wave: torch.Tensor, source_sr: int, sr: int) -> torch.Tensor:
    """``Resampler(source_sr, sr)(wave)``: resample waveforms (..., T)."""
    return Resampler(source_sr, sr).to(wave.device)(wave)


# ------------------------------------------------------------------------------------ convolution
def fftconvolve(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Full linear convolution of ``x`` (..., N) and ``y`` (..., M) along the last axis, length N + M - 1."""
    n = x.size(-1) + y.size(-1) - 1
    return torch.fft.irfft(torch.fft.rfft(x, n=n) * torch.fft.rfft(y, n=n), n=n)
