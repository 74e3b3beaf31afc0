"""Named settings: ``ci`` (synthetic twin, CPU, minutes) and ``full`` (real data, GPU, the paper's recipes).

A chapter's ``parameters`` cell names a profile and the few knobs a reader turns; every other number
lives here, once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class TourSettings:
    """The Quick tour: a few generated clips and a tiny CNN."""

    clips_per_scene: int  # generated 1 s clips per scene (half train, half test)
    devices: tuple[str, ...]  # recording devices the clips are spread over
    epochs: int
    batch_size: int
    lr: float
    n_mels: int  # the student log-mel's resolution (the paper's code: 512, the baseline: 256)


@dataclass(frozen=True)
class DataSettings:
    """The data chapter: which twin to generate, and the from-scratch difficulty check."""

    twin_size: str  # synthetic twin used when data_root is empty (see data.synthetic.TWIN_SIZES)
    n_mels: int  # student log-mel bands for the check
    check_splits: tuple[int, ...]  # train splits the check trains on
    check_epochs: int
    check_min_steps: int  # small splits train for at least this many optimiser steps
    check_batch_size: int
    check_lr: float


@dataclass(frozen=True)
class BeatsSettings:
    """BEATs chapter: the small BEATs pre-trained in the book, its SL stage, and the linear probe."""

    pretrain_epochs: int
    pretrain_batch_size: int
    pretrain_lr: float
    mask_ratio: float  # share of patches hidden from the encoder (BEATs: 0.75)
    sl_epochs: int  # supervised tagging on the pool's event tags (the "SSL+SL" checkpoint)
    sl_lr: float
    probe_split: int  # train split the linear probe learns from
    probe_steps: int


@dataclass(frozen=True)
class Profile:
    name: str
    device: str  # "cpu", "cuda" or "auto"
    threads: int | None  # torch threads; fixed in ci so reductions, hence numbers, repeat
    tour: TourSettings
    data: DataSettings
    beats: BeatsSettings


PROFILES = {
    "ci": Profile(
        name="ci",
        device="cpu",
        threads=2,
        tour=TourSettings(clips_per_scene=40, devices=("a", "b", "c"), epochs=30, batch_size=16,
                          lr=3e-3, n_mels=256),
        data=DataSettings(twin_size="ci", n_mels=128, check_splits=(5, 100), check_epochs=15,
                          check_min_steps=600, check_batch_size=32, check_lr=3e-3),
        beats=BeatsSettings(pretrain_epochs=8, pretrain_batch_size=64, pretrain_lr=1e-3, mask_ratio=0.75,
                            sl_epochs=3, sl_lr=5e-4, probe_split=5, probe_steps=500),
    ),
    "full": Profile(
        name="full",
        device="auto",
        threads=None,
        tour=TourSettings(clips_per_scene=200, devices=("a", "b", "c", "s1", "s2", "s3"), epochs=30,
                          batch_size=64, lr=3e-3, n_mels=256),
        data=DataSettings(twin_size="ci", n_mels=256, check_splits=(5, 10, 25, 50, 100), check_epochs=30,
                          check_min_steps=3000, check_batch_size=256, check_lr=3e-3),
        beats=BeatsSettings(pretrain_epochs=100, pretrain_batch_size=256, pretrain_lr=1e-3, mask_ratio=0.75,
                            sl_epochs=20, sl_lr=5e-4, probe_split=5, probe_steps=1000),
    ),
}


def get_profile(name: str) -> Profile:
    """The profile called ``name``; a clear error for an unknown one."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}: expected one of {sorted(PROFILES)}") from None


def override(settings, **knobs):
    """``settings`` with the chapter's knobs that are not ``None`` put in (others keep the profile's)."""
    unknown = set(knobs) - set(asdict(settings))
    if unknown:
        raise ValueError(f"unknown setting(s) {sorted(unknown)} for {type(settings).__name__}")
    return replace(settings, **{k: v for k, v in knobs.items() if v is not None})
