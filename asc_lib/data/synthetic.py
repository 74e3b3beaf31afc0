"""Generated acoustic scenes: the seed of the synthetic twin of TAU22.

A scene is a mixture of sound sources; several scenes share sources (bus/tram/metro share engine
hum and rumble, street_pedestrian/public_square share babble, steps and traffic), so they are
confusable as in the real data. A device is a fixed frequency response plus a noise floor.
Every clip is a pure function of its seed.
"""

from __future__ import annotations

import numpy as np

from . import DEVICES, SCENES


def _unit(x: np.ndarray) -> np.ndarray:
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def _band(x: np.ndarray, sr: int, lo: float, hi: float) -> np.ndarray:
    """Brick-wall band-pass in the frequency domain."""
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1 / sr)
    spec[(f < lo) | (f > hi)] = 0
    return np.fft.irfft(spec, len(x))


def _engine(rng, t, sr, f0):
    """Motor hum: harmonics of ``f0`` with a slow swell."""
    f0 = rng.uniform(*f0)
    hum = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 9))
    return hum * (1 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t))


def _rumble(rng, t, sr):
    """Low-frequency noise (vehicle body, ventilation)."""
    return _band(rng.standard_normal(len(t)), sr, 20, 250)


def _babble(rng, t, sr, voices=3):
    """Speech-like noise: band-limited noise gated at a syllable rate, several talkers."""
    out = np.zeros_like(t)
    for _ in range(voices):
        gate = np.abs(np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, np.pi))) ** 2
        out += gate * _band(rng.standard_normal(len(t)), sr, rng.uniform(250, 400), rng.uniform(2500, 3800))
    return out


def _birds(rng, t, sr):
    """Short frequency sweeps between 2 and 7 kHz."""
    out = np.zeros_like(t)
    for _ in range(rng.integers(3, 9)):
        n = int(rng.uniform(0.04, 0.15) * sr)
        start = rng.integers(0, len(t) - n)
        f = np.linspace(rng.uniform(2000, 5000), rng.uniform(3000, 7000), n)
        out[start:start + n] += np.sin(2 * np.pi * np.cumsum(f) / sr) * np.hanning(n)
    return out


def _steps(rng, t, sr):
    """Footsteps: decaying low-passed noise bursts about twice a second."""
    out = np.zeros_like(t)
    n = int(0.05 * sr)
    env = np.exp(-np.arange(n) / (0.008 * sr))
    for start in np.arange(rng.uniform(0, 0.4), t[-1], rng.uniform(0.4, 0.6)):
        i = int(start * sr)
        burst = rng.standard_normal(n) * env
        out[i:i + n] += burst[: len(out) - i]
    return _band(out, sr, 50, 3000)


def _chime(rng, t, sr):
    """Announcement chime: a few decaying tones."""
    out = np.zeros_like(t)
    onset = rng.uniform(0, 0.5)
    for j, f in enumerate(rng.choice([523.0, 659.0, 784.0, 880.0, 1047.0], size=3, replace=False)):
        tt = np.clip(t - onset - 0.15 * j, 0, None)
        out += np.sin(2 * np.pi * f * tt) * np.exp(-tt / 0.3) * (t >= onset + 0.15 * j)
    return out


def _music(rng, t, sr):
    """Background music: a chord with vibrato."""
    root = rng.uniform(180, 300)
    vib = 1 + 0.004 * np.sin(2 * np.pi * 5 * t)
    return sum(np.sin(2 * np.pi * root * r * vib * t) for r in (1.0, 1.26, 1.5, 2.0))


def _squeal(rng, t, sr):
    """Wheel squeal on rails: a wobbling high tone."""
    f = rng.uniform(2000, 4000) * (1 + 0.02 * np.sin(2 * np.pi * rng.uniform(1, 3) * t))
    return np.sin(2 * np.pi * np.cumsum(f) / sr) * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))


def _traffic(rng, t, sr):
    """Passing cars: low-passed noise with swells."""
    env = sum(np.exp(-((t - c) / rng.uniform(0.1, 0.3)) ** 2) for c in rng.uniform(-0.3, 1.3, size=3))
    return (0.3 + env) * _band(rng.standard_normal(len(t)), sr, 30, 1500)


def _wind(rng, t, sr):
    """Wind: slowly modulated low noise."""
    return (1 + 0.6 * np.sin(2 * np.pi * rng.uniform(0.2, 0.8) * t)) * _band(rng.standard_normal(len(t)), sr, 20, 500)


# scene -> [(source, (min weight, max weight), extra keyword arguments)]
RECIPES = {
    "airport": [(_babble, (0.4, 0.7), {}), (_chime, (0.1, 0.4), {}), (_rumble, (0.2, 0.4), {}), (_steps, (0.1, 0.3), {})],
    "bus": [(_engine, (0.6, 1.0), {"f0": (35, 50)}), (_rumble, (0.4, 0.7), {}), (_babble, (0.1, 0.3), {})],
    "metro": [(_engine, (0.5, 0.9), {"f0": (55, 75)}), (_rumble, (0.5, 0.8), {}), (_squeal, (0.1, 0.4), {})],
    "metro_station": [(_babble, (0.3, 0.6), {}), (_squeal, (0.1, 0.3), {}), (_chime, (0.1, 0.3), {}),
                      (_steps, (0.2, 0.4), {}), (_rumble, (0.2, 0.4), {})],
    "park": [(_birds, (0.3, 0.7), {}), (_wind, (0.4, 0.8), {}), (_babble, (0.0, 0.15), {})],
    "public_square": [(_babble, (0.3, 0.6), {}), (_traffic, (0.2, 0.4), {}), (_steps, (0.1, 0.3), {}),
                      (_birds, (0.0, 0.2), {})],
    "shopping_mall": [(_music, (0.2, 0.5), {}), (_babble, (0.4, 0.7), {}), (_steps, (0.1, 0.3), {})],
    "street_pedestrian": [(_babble, (0.3, 0.6), {}), (_steps, (0.3, 0.5), {}), (_traffic, (0.2, 0.4), {})],
    "street_traffic": [(_traffic, (0.7, 1.0), {}), (_engine, (0.1, 0.4), {"f0": (30, 60)}), (_rumble, (0.3, 0.5), {})],
    "tram": [(_engine, (0.4, 0.7), {"f0": (50, 65)}), (_squeal, (0.2, 0.5), {}), (_babble, (0.1, 0.3), {}),
             (_rumble, (0.2, 0.4), {})],
}


def device_response(device: str, sr: int, n: int) -> tuple[np.ndarray, float]:
    """The device's magnitude response on ``rfftfreq(n, 1/sr)`` and its noise-floor level.

    Device a is almost flat; the others have their own band limits and resonances (fixed per device).
    """
    rng = np.random.default_rng(1000 + DEVICES.index(device))
    f = np.fft.rfftfreq(n, 1 / sr)
    if device == "a":
        lo, hi, peaks, floor = 30.0, 15000.0, 0, 0.002
    else:
        lo, hi, peaks, floor = rng.uniform(80, 400), rng.uniform(5000, 12000), 3, rng.uniform(0.005, 0.03)
    gain = 1 / np.sqrt(1 + (lo / np.maximum(f, 1)) ** 4) / np.sqrt(1 + (f / hi) ** 8)
    for _ in range(peaks):
        fc, width, height = rng.uniform(300, 6000), rng.uniform(100, 800), rng.uniform(-0.7, 1.5)
        gain = gain * (1 + height * np.exp(-(((f - fc) / width) ** 2)))
    return gain, floor


def scene_clip(scene: str, device: str, seed, sr: int = 32000, seconds: float = 1.0) -> np.ndarray:
    """One clip of ``scene`` recorded by ``device``: float32 in [-1, 1], a pure function of the arguments."""
    if scene not in RECIPES:
        raise ValueError(f"unknown scene {scene!r}: expected one of {SCENES}")
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}: expected one of {DEVICES}")
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    x = sum(rng.uniform(*w) * _unit(src(rng, t, sr, **kw)) for src, w, kw in RECIPES[scene])
    gain, floor = device_response(device, sr, len(t))
    x = np.fft.irfft(np.fft.rfft(_unit(x)) * gain, len(t))
    x = _unit(x) + floor / 0.05 * _band(rng.standard_normal(len(t)), sr, 20, sr / 2)
    level = 10 ** (rng.uniform(-30, -18) / 20)  # RMS between -30 and -18 dBFS
    return np.clip(level * _unit(x), -1, 1).astype(np.float32)


def tour_clips(clips_per_scene: int, devices, sr: int = 32000, seed: int = 0):
    """A small labelled set for the Quick tour.

    Returns ``(waves (N, sr) float32, scene index (N,), device index (N,))``; clips cycle through
    ``devices``.
    """
    waves, scenes, devs = [], [], []
    for s, scene in enumerate(SCENES):
        for i in range(clips_per_scene):
            device = devices[i % len(devices)]
            waves.append(scene_clip(scene, device, seed=[seed, s, i], sr=sr))
            scenes.append(s)
            devs.append(DEVICES.index(device))
    return np.stack(waves), np.array(scenes), np.array(devs)
