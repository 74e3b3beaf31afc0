"""Input features, as functions and as modules.

- ``student_logmel``: the student's log-mel (32 kHz, pre-emphasis, STFT n_fft 4096 / window 3072 /
  hop 500, kaldi mel banks, log(x + 1e-5), (x + 4.5) / 5), as in the DCASE2024 baseline and the
  paper's code.
- ``beats_fbank``: BEATs' kaldi fbank (16 kHz, 128 mels, 25 ms / 10 ms) with its official
  normalisation constants.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .dsp import kaldi_fbank, kaldi_mel_banks

BEATS_FBANK_MEAN = 15.41663
BEATS_FBANK_STD = 6.55582


def student_logmel(wave: torch.Tensor, sr: int = 32000, n_mels: int = 256, n_fft: int = 4096,
                   win_length: int = 3072, hop: int = 500, fmin: float = 0.0,
                   fmax: float | None = None) -> torch.Tensor:
    """``wave`` (B, T) float -> log-mel (B, n_mels, frames); 1 s at 32 kHz gives 65 frames."""
    if wave.dim() != 2:
        raise ValueError(f"expected a batch of waveforms (B, T), got shape {tuple(wave.shape)}")
    x = nn.functional.conv1d(wave.unsqueeze(1), wave.new_tensor([[[-0.97, 1.0]]])).squeeze(1)  # pre-emphasis
    window = torch.hann_window(win_length, periodic=False, device=wave.device, dtype=wave.dtype)
    spec = torch.stft(x, n_fft, hop_length=hop, win_length=win_length, window=window, center=True,
                      return_complex=True)
    power = spec.real**2 + spec.imag**2  # (B, n_fft // 2 + 1, frames)
    banks = kaldi_mel_banks(n_mels, n_fft, float(sr), fmin, fmax if fmax is not None else sr / 2)
    banks = nn.functional.pad(banks, (0, 1)).to(power)  # kaldi leaves out the Nyquist bin
    mel = torch.matmul(banks, power)
    return (torch.log(mel + 1e-5) + 4.5) / 5.0


class StudentLogMel(nn.Module):
    """Module form of :func:`student_logmel`; returns (B, 1, n_mels, frames) for a CNN."""

    def __init__(self, sr: int = 32000, n_mels: int = 256, **kwargs):
        super().__init__()
        self.kwargs = dict(sr=sr, n_mels=n_mels, **kwargs)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return student_logmel(wave, **self.kwargs).unsqueeze(1)


def beats_fbank(wave: torch.Tensor, sr: int = 16000) -> torch.Tensor:
    """``wave`` (B, T) at 16 kHz -> normalised fbank (B, frames, 128), as BEATs' ``preprocess``."""
    if sr != 16000:
        raise ValueError(f"BEATs expects 16 kHz input, got sr={sr}")
    feats = [kaldi_fbank(w * 2**15, n_mels=128, sr=16000.0, frame_length_ms=25.0, frame_shift_ms=10.0)
             for w in wave]
    return (torch.stack(feats) - BEATS_FBANK_MEAN) / (2 * BEATS_FBANK_STD)


def student_logmel_all(waves, n_mels: int = 256, batch: int = 256, dtype=torch.float16,
                       progress: bool = True) -> torch.Tensor:
    """Log-mels (N, 1, n_mels, frames) of 32 kHz ``waves`` (N, T), computed in batches, stored in
    ``dtype`` (float16 halves the memory; training casts batches back to float32) in one tensor filled
    batch by batch, so the peak is the result itself (TAU22 at 256 mels: 7.7 GB)."""
    if len(waves) == 0:
        raise ValueError("student_logmel_all: no clips")
    out = None
    for i in tqdm(range(0, len(waves), batch), desc="log-mel", unit="batch", disable=not progress):
        chunk = torch.from_numpy(np.array(waves[i:i + batch], dtype=np.float32))
        x = student_logmel(chunk, n_mels=n_mels).unsqueeze(1).to(dtype)
        if out is None:
            out = torch.empty((len(waves), *x.shape[1:]), dtype=dtype)
        out[i:i + len(x)] = x
    return out


class BeatsFbank(nn.Module):
    """Module form of :func:`beats_fbank`: (B, T) at 16 kHz -> (B, frames, 128)."""

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return beats_fbank(wave)
