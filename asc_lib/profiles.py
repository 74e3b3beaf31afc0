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
class Profile:
    name: str
    device: str  # "cpu", "cuda" or "auto"
    threads: int | None  # torch threads; fixed in ci so reductions, hence numbers, repeat
    tour: TourSettings


PROFILES = {
    "ci": Profile(
        name="ci",
        device="cpu",
        threads=2,
        tour=TourSettings(clips_per_scene=40, devices=("a", "b", "c"), epochs=30, batch_size=16,
                          lr=3e-3, n_mels=256),
    ),
    "full": Profile(
        name="full",
        device="auto",
        threads=None,
        tour=TourSettings(clips_per_scene=200, devices=("a", "b", "c", "s1", "s2", "s3"), epochs=30,
                          batch_size=64, lr=3e-3, n_mels=256),
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
