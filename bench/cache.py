#!/usr/bin/env python3
"""Time the waveform cache against decoding every epoch, and print a table.

Writes N synthetic 1 s, 44.1 kHz, 24-bit mono WAVs (sines plus noise) into a temporary folder, then
measures, in clips per second:

  (1) the first pass: decode + resample every clip into the 32 kHz cache (asc_lib.data.cache);
  (2) one epoch read from the cache: every row in random order, batches of 64, as torch tensors;
  (3) one epoch without a cache: decode + resample every clip from its WAV (as a Dataset's
      __getitem__ would), one clip at a time, with the resampling kernel built once;

and the ratio (2)/(3). (2) and (3) are the median of 3 epochs, each in a new random order. The cache file is in the page cache when (2) runs (it was just written), as
it is from the second epoch on in training.

    python bench/cache.py [--clips 400] [--sr 32000]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from asc_lib.data.cache import load_wav, waveform_cache  # noqa: E402
from asc_lib.dsp import Resampler  # noqa: E402

SOURCE_SR = 44100
BATCH = 64
EPOCHS = 3  # (2) and (3) report the median epoch: one cache epoch lasts only milliseconds


def write_clips(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` 1 s mono clips: a few random sines plus white noise, 24-bit PCM."""
    rng = np.random.default_rng(seed)
    t = np.arange(SOURCE_SR) / SOURCE_SR
    files = []
    for i in range(n):
        x = sum(np.sin(2 * np.pi * rng.uniform(50, 8000) * t + rng.uniform(0, 6.3)) for _ in range(3))
        x = 0.2 * x + 0.05 * rng.standard_normal(len(t))
        path = folder / f"clip{i:05d}.wav"
        sf.write(path, np.clip(x, -1, 1), SOURCE_SR, subtype="PCM_24")
        files.append(path)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=400)
    parser.add_argument("--sr", type=int, default=32000)
    args = parser.parse_args()
    n, sr = args.clips, args.sr

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "audio").mkdir()
        files = write_clips(tmp / "audio", n)

        # (1) first pass: build the cache.
        start = time.perf_counter()
        cached = waveform_cache(files, sr, tmp / "cache", progress=False)
        build = time.perf_counter() - start

        rng = np.random.default_rng(1)
        resample = Resampler(SOURCE_SR, sr)
        checksum = 0.0
        epoch_cache, epoch_decode = [], []
        for _ in range(EPOCHS):
            order = rng.permutation(n)
            # (2) one epoch from the cache: random order, batches of 64, torch tensors.
            start = time.perf_counter()
            for lo in range(0, n, BATCH):
                batch = torch.from_numpy(cached[order[lo:lo + BATCH]])
                checksum += float(batch[:, 0].sum())
            epoch_cache.append(time.perf_counter() - start)

            # (3) one epoch without a cache: decode + resample every clip, in the same order.
            start = time.perf_counter()
            for i in order:
                with torch.inference_mode():
                    wave = resample(torch.from_numpy(load_wav(files[i], SOURCE_SR)))
                checksum += float(wave[0])
            epoch_decode.append(time.perf_counter() - start)
        epoch_cache, epoch_decode = float(np.median(epoch_cache)), float(np.median(epoch_decode))
        size_mb = Path(cached.filename).stat().st_size / 1e6

    rows = [
        ("(1) first pass: build the cache", build),
        (f"(2) epoch from the cache (median of {EPOCHS})", epoch_cache),
        (f"(3) epoch decoding WAVs (median of {EPOCHS})", epoch_decode),
    ]
    print(f"{n} clips of 1 s, 44.1 kHz 24-bit -> {sr} Hz (cache {size_mb:.1f} MB); batches of {BATCH}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"{'pass':<42} {'seconds':>9} {'clips/s':>10}")
    for label, secs in rows:
        print(f"{label:<42} {secs:>9.3f} {n / secs:>10.0f}")
    ratio = epoch_decode / epoch_cache
    print(f"{'ratio (2)/(3) in clips/s':<42} {'':>9} {ratio:>9.0f}x  (target >= 20x: {'met' if ratio >= 20 else 'NOT met'})")


if __name__ == "__main__":
    main()
