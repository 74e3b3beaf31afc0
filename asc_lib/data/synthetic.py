"""The synthetic twin of TAU22: generated acoustic scenes written in the real dataset's layout.

A scene is a mixture of sound sources; several scenes share sources (bus/tram/metro share engine
hum and rumble, street_pedestrian/public_square share babble, steps and traffic), so they are
confusable as in the real data. A *location* fixes the mix and the sources' character (the bus line,
the crowd), a *city* tilts the spectrum, a *device* is a fixed frequency response plus a noise floor.
Any scene may also carry a sound that belongs elsewhere (a distractor), and a location may sound partly
like another scene of its group (:data:`GROUPS`: a quiet tram, a bus with squealing brakes, a square as busy
as a street), as real scenes overlap: this overlap is what no amount of data removes. Every file is a pure
function of the seed: the same seed writes byte-identical files.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from ..integrity import build_lock, partial_of, remove_partials
from . import CITIES, DEVICES, SCENES
from .tau import write_tsv

TWIN_VERSION = 4  # bump when the generator's output changes: cached twins are then rebuilt


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
    """Speech-like noise: noise gated at syllable rates (several talkers), band-limited to speech."""
    gates = sum(np.abs(np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, np.pi))) ** 2 * rng.standard_normal(len(t))
                for _ in range(voices))
    return _band(gates, sr, rng.uniform(250, 400), rng.uniform(2500, 3800))


def _birds(rng, t, sr):
    """Short frequency sweeps between 2 and 7 kHz."""
    out = np.zeros_like(t)
    for _ in range(rng.integers(3, 9) * max(1, round(len(t) / sr))):
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
    onset = rng.uniform(0, max(0.5, len(t) / sr - 1.0))
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
    seconds = len(t) / sr
    env = sum(np.exp(-((t - c) / rng.uniform(0.1, 0.3)) ** 2)
              for c in rng.uniform(-0.3, seconds + 0.3, size=3 * max(1, round(seconds))))
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



def _siren(rng, t, sr):
    """Emergency siren: a tone sweeping up and down (pool only)."""
    f = rng.uniform(600, 900) * (1 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t))
    return np.sin(2 * np.pi * np.cumsum(f) / sr)


def _bark(rng, t, sr):
    """Dog barks: short harmonic bursts (pool only)."""
    out = np.zeros_like(t)
    n = int(0.12 * sr)
    for start in rng.uniform(0, max(t[-1] - 0.12, 0.01), size=rng.integers(1, 4)):
        i = int(start * sr)
        f0 = rng.uniform(300, 600)
        tt = np.arange(n) / sr
        burst = sum(np.sin(2 * np.pi * k * f0 * tt) / k for k in range(1, 6)) * np.hanning(n)
        out[i:i + n] += burst[: len(out) - i]
    return out


def _rain(rng, t, sr):
    """Rain: dense high-passed crackle (pool only)."""
    drops = (rng.random(len(t)) < 0.01) * rng.standard_normal(len(t))
    return _band(drops + 0.2 * rng.standard_normal(len(t)), sr, 1500, sr / 2)


# Sources of the unlabeled pool (the AudioSet analogue): the scenes' sources and a few more.
POOL_SOURCES = {"engine": _engine, "rumble": _rumble, "speech": _babble, "birds": _birds, "footsteps": _steps,
                "chime": _chime, "music": _music, "squeal": _squeal, "traffic": _traffic, "wind": _wind,
                "siren": _siren, "bark": _bark, "rain": _rain}
DISTRACTORS = [_birds, _chime, _music, _steps, _traffic, _squeal, _babble]


def _response(rng, f: np.ndarray, lo: float, hi: float, peaks: int, height: float) -> np.ndarray:
    """A microphone's magnitude response on frequencies ``f``: band limits and ``peaks`` resonances."""
    gain = 1 / np.sqrt(1 + (lo / np.maximum(f, 1)) ** 4) / np.sqrt(1 + (f / hi) ** 8)
    for _ in range(peaks):
        fc, width, h = rng.uniform(300, 6000), rng.uniform(100, 800), rng.uniform(-0.7, height)
        gain = gain * (1 + h * np.exp(-(((f - fc) / width) ** 2)))
    return gain


@functools.lru_cache(maxsize=32)
def device_response(device: str, sr: int, n: int) -> tuple[np.ndarray, float]:
    """The device's magnitude response on ``rfftfreq(n, 1/sr)`` and its noise-floor level.

    Device a is almost flat; the others have their own band limits and resonances (fixed per device;
    the simulated ones, s1-s6, colour the sound more than the real b and c).
    """
    rng = np.random.default_rng(1000 + DEVICES.index(device))
    f = np.fft.rfftfreq(n, 1 / sr)
    if device == "a":
        lo, hi, peaks, height, floor = 30.0, 15000.0, 0, 0.0, 0.002
    elif device in ("b", "c"):
        lo, hi, peaks, height, floor = rng.uniform(80, 200), rng.uniform(9000, 12000), 2, 0.8, rng.uniform(0.005, 0.01)
    else:
        lo, hi, peaks, height, floor = rng.uniform(150, 400), rng.uniform(5000, 9000), 3, 1.5, rng.uniform(0.01, 0.03)
    return _response(rng, f, lo, hi, peaks, height), floor


def random_device(rng, sr: int, n: int) -> tuple[np.ndarray, float]:
    """A recording device drawn from a wider family than TAU22's nine (the pool's countless phones,
    cameras and recorders): band limits from 20-500 Hz to 4-16 kHz, zero to four resonances, a noise floor."""
    f = np.fft.rfftfreq(n, 1 / sr)
    lo, hi = rng.uniform(20, 500), rng.uniform(4000, min(16000, sr / 2))
    return _response(rng, f, lo, hi, int(rng.integers(0, 5)), rng.uniform(0, 2)), rng.uniform(0.001, 0.04)


@functools.lru_cache(maxsize=32)
def city_tilt(city: str, sr: int, n: int) -> np.ndarray:
    """A city's gentle spectral tilt (a nuisance: -2 to +2 dB per octave around 1 kHz)."""
    slope = np.random.default_rng(2000 + CITIES.index(city)).uniform(-2, 2)
    f = np.maximum(np.fft.rfftfreq(n, 1 / sr), 20)
    return 10 ** (slope * np.log2(f / 1000) / 20)


# Scenes that real listeners and models confuse (TAU22's confusion matrices: transport, the street, the
# large indoor spaces); a location may sound partly like another scene of its group.
GROUPS = (("bus", "metro", "tram"), ("park", "public_square", "street_pedestrian", "street_traffic"),
          ("airport", "metro_station", "shopping_mall"))
# The share of locations that sound half like a sibling scene (its share of the sound: U(0.4, 0.6)), set so
# that TF-SepNet alone follows the real learning curve, the DCASE2024 baseline's 42.4 / 50.3 / 57.0 % at
# 5 / 25 / 100 % (bench/miniature.py: 41.9 / 50.3 / 60.0 at 0.35; 30.0 / 36.3 / 57.3 at 0.4 with the
# shorter small-split recipe; without overlap 42.4 / 54.1 / 80.3, a task that data makes easy)
OVERLAP = 0.35


def _recipe_mix(scene: str, rng, scale: float) -> list:
    mix = []
    for src, (lo, hi), kw in RECIPES[scene]:
        kw = dict(kw)
        if "f0" in kw:  # one bus line, one engine: its pitch is fixed at the location
            centre = rng.uniform(*kw["f0"])
            kw["f0"] = (0.97 * centre, 1.03 * centre)
        mix.append((src, scale * rng.uniform(lo, hi), kw))
    return mix


def location_mix(scene: str, city: str, location: int, seed: int) -> list:
    """The fixed character of one recording location: each source's weight and settings, a distractor;
    at a share ``OVERLAP`` of the locations, about half of the sound is another scene's of its group
    (:data:`GROUPS`): a clip from there is ambiguous to any listener, whatever the training data."""
    rng = np.random.default_rng([seed, 1, SCENES.index(scene), CITIES.index(city), location])
    group = next(g for g in GROUPS if scene in g)
    others = [g for g in group if g != scene]
    sibling = others[rng.integers(len(others))]
    share = rng.uniform(0.4, 0.6) if rng.random() < OVERLAP else 0.0
    mix = _recipe_mix(scene, rng, 1 - share) + (_recipe_mix(sibling, rng, share) if share else [])
    if rng.random() < 0.5:  # a sound that belongs to other scenes, at this location
        mix.append((DISTRACTORS[rng.integers(len(DISTRACTORS))], rng.uniform(0.1, 0.4), {}))
    return mix


def render(mix: list, city: str, rng, sr: int, seconds: float) -> np.ndarray:
    """A device-independent recording of ``mix`` in ``city``, as its spectrum (``rfft``, unit RMS)."""
    t = np.arange(int(round(sr * seconds))) / sr
    x = sum(w * rng.uniform(0.7, 1.3) * _unit(src(rng, t, sr, **kw)) for src, w, kw in mix)
    x = _unit(x) + rng.uniform(0.05, 0.3) * _unit(np.cumsum(rng.standard_normal(len(t))))  # city ambience
    spec = np.fft.rfft(x) * city_tilt(city, sr, len(t))
    return spec / np.sqrt(np.sum(np.abs(spec[1:]) ** 2) * 2 / len(t) ** 2)


def record(spec: np.ndarray, n: int, device: str, rng, sr: int, level_db: float) -> np.ndarray:
    """The recording with spectrum ``spec`` (``n`` samples) as ``device`` records it, at ``level_db``
    dBFS RMS: float32 in [-1, 1]."""
    gain, floor = device_response(device, sr, n)
    y = _unit(np.fft.irfft(spec * gain, n)) + floor / 0.05 * rng.standard_normal(n)
    return np.clip(10 ** (level_db / 20) * _unit(y), -1, 1).astype(np.float32)


def scene_clip(scene: str, device: str, seed, sr: int = 32000, seconds: float = 1.0) -> np.ndarray:
    """One clip of ``scene`` at a random location, recorded by ``device``; a pure function of the arguments."""
    if scene not in RECIPES:
        raise ValueError(f"unknown scene {scene!r}: expected one of {SCENES}")
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}: expected one of {DEVICES}")
    rng = np.random.default_rng(seed)
    city = CITIES[rng.integers(len(CITIES))]
    mix = location_mix(scene, city, int(rng.integers(1 << 30)), int(rng.integers(1 << 30)))
    n = int(round(sr * seconds))
    return record(render(mix, city, rng, sr, seconds), n, device, rng, sr, rng.uniform(-30, -18))


def tour_clips(clips_per_scene: int, devices, sr: int = 32000, seed: int = 0):
    """A small labelled set for the Quick tour.

    Returns ``(waves (N, sr) float32, scene index (N,), device index (N,), is_train (N,) bool)``. Clips
    cycle through ``devices``; whole rounds of devices go alternately to train and test, so both halves
    hold every device, whatever their number.
    """
    waves, scenes, devs, train = [], [], [], []
    for s, scene in enumerate(SCENES):
        for i in range(clips_per_scene):
            device = devices[i % len(devices)]
            waves.append(scene_clip(scene, device, seed=[seed, s, i], sr=sr))
            scenes.append(s)
            devs.append(DEVICES.index(device))
            train.append((i // len(devices)) % 2 == 0)
    return np.stack(waves), np.array(scenes), np.array(devs), np.array(train)


def impulse_responses(n: int = 8, sr: int = 32000, seed: int = 0) -> list[np.ndarray]:
    """Stand-ins for measured microphone impulse responses (MicIRP), for DIR on the twin: short
    decaying noise bursts (5-40 ms) shaped by random resonances, unit energy, float32."""
    irs = []
    for i in range(n):
        rng = np.random.default_rng([seed, 5, i])
        length = int(rng.uniform(0.005, 0.04) * sr)
        ir = rng.standard_normal(length) * np.exp(-np.arange(length) / (rng.uniform(0.1, 0.4) * length))
        ir[0] += 3.0  # the direct path
        spec = np.fft.rfft(ir)
        f = np.fft.rfftfreq(length, 1 / sr)
        spec *= 1 + rng.uniform(0.3, 1.5) * np.exp(-(((f - rng.uniform(500, 6000)) / 800) ** 2))
        ir = np.fft.irfft(spec, length)
        irs.append((ir / np.sqrt(np.sum(ir**2))).astype(np.float32))
    return irs


# ---------------------------------------------------------------------------------------------
# The twin on disk


@dataclass(frozen=True)
class TwinSize:
    """How much the twin holds. A recording is a 10 s segment at one location, of which the first
    ``clips_per_recording`` 1 s clips are kept (TAU22 keeps all ten). What gives a measurement power is
    the number of independent recordings and locations, not of clips, so the ``ci`` twin keeps few clips
    of many recordings, and every test recording comes from a location of its own."""

    a_per_scene: int  # train recordings by device a, per scene
    other_per_scene: int  # train recordings by each of b, c, s1, s2, s3, per scene
    test_per_scene: int  # test recordings per scene, each at its own location, recorded by all nine devices
    segments_per_location: int  # train recordings made at one location
    pool_clips: int  # unlabeled 1 s clips of general sounds (16 kHz) for pre-training
    clips_per_recording: int = 10  # 1 s clips kept of each 10 s recording


TWIN_SIZES = {
    "ci": TwinSize(a_per_scene=120, other_per_scene=8, test_per_scene=24, segments_per_location=3, pool_clips=32000,
                   clips_per_recording=2),
    "tiny": TwinSize(a_per_scene=4, other_per_scene=1, test_per_scene=2, segments_per_location=2, pool_clips=8,
                     clips_per_recording=2),
}
SR = 44100
TRAIN_DEVICES = ("a", "b", "c", "s1", "s2", "s3")


def _plan(size: TwinSize, seed: int) -> list[dict]:
    """Every recording of the twin: scene, city, location, segment, devices, and whether it is test."""
    rng = np.random.default_rng([seed, 0])
    plan = []
    for s, scene in enumerate(SCENES):
        groups = [("a", size.a_per_scene, False)] + [(d, size.other_per_scene, False) for d in TRAIN_DEVICES[1:]] \
            + [(DEVICES, size.test_per_scene, True)]
        location = 1000 + 100 * s
        for devices, n, test in groups:
            for j in range(n):
                if test or j % size.segments_per_location == 0:
                    location += 1
                    city = CITIES[rng.integers(len(CITIES))]
                plan.append({"scene": scene, "city": city, "location": location, "segment": 10 * location + j,
                             "devices": list(devices) if test else [devices], "test": test})
    return plan


def _write_recording(job: tuple) -> list[tuple[str, str, str, str]]:
    """Render one recording through its devices and write its 1 s clips; returns meta rows."""
    rec, seed, folder, clips = job
    scene, city = rec["scene"], rec["city"]
    rng = np.random.default_rng([seed, 2, SCENES.index(scene), rec["location"], rec["segment"]])
    spec = render(location_mix(scene, city, rec["location"], seed), city, rng, SR, float(clips))
    rows = []
    for device in rec["devices"]:
        y = record(spec, clips * SR, device, rng, SR, rng.uniform(-30, -18))
        for k in range(clips):
            name = f"audio/{scene}-{city}-{rec['location']}-{rec['segment']}-{k}-{device}.wav"
            sf.write(Path(folder) / name, y[k * SR:(k + 1) * SR], SR, subtype="PCM_24")
            rows.append((name, scene, f"{city}-{rec['location']}", device))
    return rows


def _split_rows(plan: list[dict], seed: int) -> dict:
    """Nested train splits (5 ⊂ 10 ⊂ 25 ⊂ 50 ⊂ 100) of whole recordings, and the test recordings.

    Device a: a prefix of each scene's shuffled recordings, so scenes stay balanced. Other devices: a
    prefix of the device's recordings interleaved over scenes. Fractions are rounded up.
    """
    rng = np.random.default_rng([seed, 3])
    order = {}
    for device in TRAIN_DEVICES:
        per_scene = [[r for r in plan if not r["test"] and r["devices"] == [device] and r["scene"] == s] for s in SCENES]
        for recs in per_scene:
            rng.shuffle(recs)
        if device == "a":
            order[device] = per_scene
        else:
            scenes = rng.permutation(len(SCENES))
            order[device] = [[per_scene[s][j] for j in range(len(per_scene[0])) for s in scenes]]
    splits = {}
    for fraction in (5, 10, 25, 50, 100):
        splits[fraction] = [r for groups in order.values() for recs in groups
                            for r in recs[:math.ceil(fraction / 100 * len(recs))]]
    splits["test"] = [r for r in plan if r["test"]]
    return splits


def make_synthetic_tau(root: Path, size: str = "ci", seed: int = 0, workers: int = 2, progress: bool = True) -> Path:
    """Write the twin of TAU22 at ``root`` (44.1 kHz 24-bit WAVs, meta.csv, split*.csv, test.csv) and
    its unlabeled pool at ``root/pool``; returns ``root``.

    Reuses ``root`` when it already holds this very twin (same size, seed and generator version).
    Built in a temporary folder of this process and renamed at the end, so an interrupted build is never
    reused; one process builds it at a time (a second waits for it, then reuses its twin).
    """
    root = Path(root)
    manifest = {"twin_version": TWIN_VERSION, "size": size, **asdict(TWIN_SIZES[size]), "seed": seed}
    if not _is_twin(root, manifest):  # this twin, renamed into place whole, is read without the lock
        with build_lock(root, "synthetic TAU22 twin"):  # a second process waits, then reuses it
            if not _is_twin(root, manifest):
                return _make_twin(root, manifest, size, seed, workers, progress)
    # messages about cached work go to stderr: a fresh and a cached run print the same stdout
    print(f"synthetic TAU22 twin: reusing {root}", file=sys.stderr)
    return root


def _is_twin(root: Path, manifest: dict) -> bool:
    """Whether ``root`` holds this very twin (its ``twin.json`` is ``manifest``)."""
    return (root / "twin.json").is_file() and json.loads((root / "twin.json").read_text()) == manifest


def _make_twin(root: Path, manifest: dict, size: str, seed: int, workers: int, progress: bool) -> Path:
    if (root / "twin.json").is_file():
        shutil.rmtree(root)  # an older twin or another seed: rebuild
    elif root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} exists and is not a synthetic twin (no twin.json): refusing to overwrite it")
    remove_partials(root)  # builds of processes that died: we hold the lock
    tmp = partial_of(root)
    (tmp / "audio").mkdir(parents=True)
    plan = _plan(TWIN_SIZES[size], seed)
    jobs = [(rec, seed, str(tmp), TWIN_SIZES[size].clips_per_recording) for rec in plan]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = list(tqdm(pool.map(_write_recording, jobs, chunksize=4), total=len(jobs),
                            desc="twin recordings", unit="rec", disable=not progress))
    meta = sorted(row for rows in results for row in rows)
    write_tsv(tmp / "meta.csv", ["filename", "scene_label", "identifier", "source_label"], meta)
    clips_of = {id(rec): [(row[0], row[1]) for row in rows] for rec, rows in zip(plan, results)}
    for name, recs in _split_rows(plan, seed).items():
        file = f"split{name}.csv" if name != "test" else "test.csv"
        write_tsv(tmp / file, ["filename", "scene_label"], sorted(c for r in recs for c in clips_of[id(r)]))
    make_sound_pool(tmp / "pool", TWIN_SIZES[size].pool_clips, seed, workers=workers, progress=progress)
    (tmp / "twin.json").write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, root)
    n_test = sum(len(r["devices"]) for r in plan if r["test"]) * TWIN_SIZES[size].clips_per_recording
    print(f"synthetic TAU22 twin '{size}' (seed {seed}) at {root}: {len(meta)} clips "
          f"({len(meta) - n_test} train, {n_test} test), pool of {TWIN_SIZES[size].pool_clips} clips", file=sys.stderr)
    return root


SOURCE_NAMES = {fn: name for name, fn in POOL_SOURCES.items()}
SCENE_LIKE = 0.5  # the share of pool clips that are scene-like mixtures


def pool_scene_like(n_clips: int, seed: int) -> np.ndarray:
    """Which of the first ``n_clips`` pool clips are scene-like mixtures (bool (N,)), as :func:`_pool_clip` draws it."""
    return np.array([np.random.default_rng([seed, 4, i]).random() < SCENE_LIKE for i in range(n_clips)])


def _pool_clip(job: tuple) -> tuple[np.ndarray, list[str]]:
    """Pool clip ``i``: a scene-like mixture (an unlabelled recording of any scene at a random place)
    or one to three sources, recorded through a random device; and the names of the sources heard."""
    i, seed, sr = job
    rng = np.random.default_rng([seed, 4, i])
    t = np.arange(sr) / sr
    if rng.random() < SCENE_LIKE:
        scene, city = SCENES[rng.integers(len(SCENES))], CITIES[rng.integers(len(CITIES))]
        mix = [m for m in location_mix(scene, city, int(rng.integers(1 << 30)), seed) if m[1] > 0.05]
        spec = render(mix, city, rng, sr, 1.0)
        tags = sorted({SOURCE_NAMES[src] for src, _, _ in mix})
    else:
        names = sorted(POOL_SOURCES)
        chosen = sorted(rng.choice(len(names), size=rng.integers(1, 4), replace=False))
        kw = {"engine": {"f0": (30, 80)}}
        x = sum(rng.uniform(0.5, 1.0) * _unit(POOL_SOURCES[names[j]](rng, t, sr, **kw.get(names[j], {})))
                for j in chosen)
        spec = np.fft.rfft(_unit(x))
        tags = [names[j] for j in chosen]
    gain, floor = random_device(rng, sr, sr)
    y = _unit(np.fft.irfft(spec * gain, sr)) + floor / 0.05 * rng.standard_normal(sr)
    return np.clip(10 ** (rng.uniform(-30, -18) / 20) * _unit(y), -1, 1).astype(np.float32), tags


def make_sound_pool(root: Path, n_clips: int, seed: int, sr: int = 16000, workers: int = 2,
                    progress: bool = False) -> Path:
    """Unlabeled 1 s clips of general sounds with their event tags (the AudioSet analogue).

    Writes ``root/audio/pool-NNNNN.wav`` (16 kHz, 16-bit) and ``root/tags.csv`` (filename, tags
    separated by commas). Half the clips are scene-like mixtures (the twin's scenes at places of their
    own, overlap included), half mix one to three sources, some heard in no scene (sirens, barks, rain);
    each is recorded through a device of its own (:func:`random_device`); tags name the sources heard.
    """
    root = Path(root)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        clips = pool.map(_pool_clip, [(i, seed, sr) for i in range(n_clips)], chunksize=64)
        for i, (x, tags) in enumerate(tqdm(clips, total=n_clips, desc="pool clips", unit="clip",
                                           disable=not progress)):
            name = f"audio/pool-{i:05d}.wav"
            sf.write(root / name, x, sr, subtype="PCM_16")
            rows.append((name, ",".join(tags)))
    write_tsv(root / "tags.csv", ["filename", "tags"], rows)
    return root
