"""Named settings: ``ci`` (synthetic twin, CPU, minutes), ``full`` (real data, GPU, the paper's recipes)
and ``full-smoke`` (``full`` with only the amounts cut, to prove its code path in minutes: :func:`smoke`).

A chapter's ``parameters`` cell names a profile and the few knobs a reader turns; every other number
lives here, once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from .train import Recipe


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
    """The data chapter: which twin to generate (its check trains the student alone: StudentSettings)."""

    twin_size: str  # synthetic twin used when data_root is empty (see data.synthetic.TWIN_SIZES)


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
    tokenizer_epochs: int  # iteration 2 on: the tokenizer distilled from the previous iteration's encoder
    tokenizer_lr: float
    iterations: int = 2  # BEATs iterations the chapter runs (2: the self-distilled tokenizer's too)
    sl_clips: int | None = None  # the SL stage tags the first sl_clips clips of the pool (None: all)


@dataclass(frozen=True)
class TeacherSettings:
    """Teachers chapter: BEATs fine-tuned three ways (and from scratch) on each split."""

    splits: tuple[int, ...]
    val_fraction: float  # share of a split's recordings held out for model selection
    frozen: Recipe  # SSL*: new linear head, encoder frozen
    finetune: Recipe  # SSL, SSL+SL and scratch: everything trained
    mixup_alpha: float = 0.3
    mixstyle_alpha: float = 0.4
    mixstyle_p: float = 0.4
    dir_p: float = 0.6
    specaug: float = 0.2  # SpecAugment mask size, a proportion of each axis
    min_passes: float = 0.0  # ci: a fixed-step recipe gets at least this many passes over a split (with_passes)
    test_monitor: float = 1.0  # share of the test recordings scored after every epoch (selection study)
    cache_inputs: bool = False  # keep every clip's fbank (and the frozen encoder's tokens) in memory
    fit_study: tuple[int, ...] = ()  # SSL+SL on the smaller splits: its logits after these epochs too (KD study)
    fit_study_splits: tuple[int, ...] = ()
    keep: str = "val_loss"  # the epoch a teacher keeps: its lowest validation loss, or "last"
    # (split, epochs): the fine-tuned teachers of these splits train this many epochs of the finetune recipe's
    # steps instead of finetune.epochs (ci: long enough to fit the clips they teach, as the real 30 do)
    finetune_epochs: tuple[tuple[int, int], ...] = ()

    def __post_init__(self):
        if self.keep not in ("val_loss", "last"):
            raise ValueError(f"TeacherSettings.keep must be 'val_loss' or 'last', got {self.keep!r}")


@dataclass(frozen=True)
class StudentSettings:
    """Student chapter: TF-SepNet from scratch and distilled from the teachers, then INT8."""

    splits: tuple[int, ...]
    n_mels: int  # log-mel bands of the student's input (the authors: 512)
    recipe: Recipe
    val_fraction: float  # scratch only: a distilled student holds out its teachers' recordings (distill.student_hold_out)
    kd_lambda: float = 0.02  # weight of the label term; 1 - kd_lambda on the distillation term
    temperature: float = 2.0
    mixup_alpha: float = 0.3
    mixstyle_alpha: float = 0.4
    mixstyle_p: float = 0.8
    dir_p: float = 0.4
    min_passes: float = 0.0  # ci: a fixed-step recipe gets at least this many passes over a split (with_passes)
    calibration_clips: int = 512  # INT8: training clips used to calibrate the activation ranges
    cache_features: bool = False  # train on log-mels computed once (then no DIR: dir_p must be 0)


@dataclass(frozen=True)
class DataCut:
    """A smoke profile's share of a TAU22 folder (see :func:`asc_lib.data.tau.write_cut`): per scene, two
    recordings of the splits and two of test (device a and another), and of each a few 1 s clips."""

    clips_per_recording: int = 1

    def __str__(self) -> str:
        return (f"the data: per scene 2 recordings of the splits and 2 of test (device a and another), "
                f"{self.clips_per_recording} clip(s) of each")


@dataclass(frozen=True)
class Profile:
    name: str
    device: str  # "cpu", "cuda" or "auto"
    threads: int | None  # torch threads; fixed in ci so reductions, hence numbers, repeat
    tour: TourSettings
    data: DataSettings
    beats: BeatsSettings
    teachers: TeacherSettings
    student: StudentSettings
    cut: DataCut | None = field(default=None)  # smoke profiles only: the data a chapter works on is cut


PROFILES = {
    "ci": Profile(
        name="ci",
        device="cpu",
        threads=2,
        tour=TourSettings(clips_per_scene=40, devices=("a", "b", "c"), epochs=30, batch_size=16,
                          lr=3e-3, n_mels=256),
        data=DataSettings(twin_size="ci"),
        # the pool is 10x the 100 % split (32,000 s; AudioSet is ~143x TAU22's), seen once: 500 steps of 64
        # (the old 3,000-clip pool took 375, 8 passes); the SL stage tags 9,000 of its clips, 141 steps as before.
        # The second iteration is its own command (README: python -m asc_lib.book run --only beats -p
        # iterations 2): the teachers start from iteration 1, and its time buys teacher training; its
        # tokenizer sees the pool once (as many clips as 10 passes over the old pool)
        beats=BeatsSettings(pretrain_epochs=1, pretrain_batch_size=64, pretrain_lr=1e-3, mask_ratio=0.75,
                            sl_epochs=1, sl_lr=5e-4, probe_split=5, probe_steps=500,
                            tokenizer_epochs=1, tokenizer_lr=1e-3, iterations=1, sl_clips=9000),
        # ci trains three of the five splits, long enough to be read (bench/convergence.py); full trains all
        # teachers fit their clips as the real 30-epoch recipe does, as far as the budget goes
        # (bench/teacher_fit.py): they keep their last epoch (validation loss on the few held-out recordings
        # kept SSL+SL at 5 % at epoch 8, 82 % right on its clips; its last epoch: 86 %), and at 5 % they
        # train 20 epochs (73 passes: SSL+SL fits 100 % of its clips from epoch 15); 10 epochs elsewhere, at
        # least 4 passes on the large split (fitting 25 % took more than 28 passes, past the book's time);
        # the KD study keeps SSL+SL's logits after epochs 2 and 5 on the two smaller splits
        teachers=TeacherSettings(
            splits=(5, 25, 100), val_fraction=0.1, test_monitor=1 / 8, cache_inputs=True, min_passes=4,
            fit_study=(2, 5), fit_study_splits=(5, 25), keep="last", finetune_epochs=((5, 20),),
            frozen=Recipe(epochs=10, steps_per_epoch=16, batch_size=32, lr=1e-2, optimizer="adam"),
            finetune=Recipe(epochs=10, steps_per_epoch=16, batch_size=32, lr=1e-3, optimizer="adamw",
                            betas=(0.9, 0.98), weight_decay=0.01, schedule="warmup_linear", warmup_epochs=0.5,
                            final_lr_ratio=0.005)),
        student=StudentSettings(
            splits=(5, 25, 100), n_mels=64, val_fraction=0.1, calibration_clips=256,
            cache_features=True, dir_p=0.0, min_passes=6,
            # 40 steps an epoch: the 5 and 25 % runs were still short of their fit at 20 (the real
            # recipe trains every split 150 epochs); the 100 % split gets its 6 passes either way
            recipe=Recipe(epochs=6, steps_per_epoch=40, batch_size=32, lr=4e-3, optimizer="adam",
                          schedule="cosine_restarts", restart_epochs=6, restart_mult=2)),
    ),
    "full": Profile(
        name="full",
        device="auto",
        threads=None,
        tour=TourSettings(clips_per_scene=200, devices=("a", "b", "c", "s1", "s2", "s3"), epochs=30,
                          batch_size=64, lr=3e-3, n_mels=256),
        data=DataSettings(twin_size="ci"),
        beats=BeatsSettings(pretrain_epochs=100, pretrain_batch_size=256, pretrain_lr=1e-3, mask_ratio=0.75,
                            sl_epochs=20, sl_lr=5e-4, probe_split=5, probe_steps=1000,
                            tokenizer_epochs=30, tokenizer_lr=1e-3),
        # the authors' config/beats_ssl_star.yaml and config/beats_ssl.yaml (beats_ssl+sl.yaml: the same)
        teachers=TeacherSettings(
            splits=(5, 10, 25, 50, 100), val_fraction=0.1, fit_study=(5, 15), fit_study_splits=(5, 25),
            frozen=Recipe(epochs=60, batch_size=256, lr=1e-3, optimizer="adam"),
            finetune=Recipe(epochs=30, batch_size=128, lr=1e-5, optimizer="adamw", betas=(0.9, 0.98),
                            weight_decay=0.01, schedule="warmup_linear", warmup_epochs=4,
                            final_lr_ratio=0.005)),
        # the authors' config/tfsepnet_kd.yaml
        student=StudentSettings(
            splits=(5, 10, 25, 50, 100), n_mels=512, val_fraction=0.1,
            recipe=Recipe(epochs=150, batch_size=256, lr=4e-3, optimizer="adam", schedule="cosine_restarts",
                          restart_epochs=10, restart_mult=2)),
    ),
}


def smoke(profile: Profile) -> Profile:
    """``profile`` with only its amounts cut, so that every chapter runs its code path (the same models,
    input sizes, optimisers, schedules, augmentations, selection, logits, ensembles, distillation, INT8 and
    tables) in minutes on a CPU: two epochs of two batches, the smallest and the largest split, a few clips
    per split (:class:`DataCut`), a few generated clips for the tour and the smallest synthetic twin for
    the pre-training pool. The one place these amounts live."""
    def short(recipe: Recipe, batch_size: int) -> Recipe:  # two epochs of two batches; both phases of the schedule
        cut = {"warmup_linear": {"warmup_epochs": 1}, "cosine_restarts": {"restart_epochs": 1}}
        return replace(recipe, epochs=2, steps_per_epoch=2, batch_size=batch_size, **cut.get(recipe.schedule, {}))

    ends = (profile.teachers.splits[0], profile.teachers.splits[-1])  # the smallest and the largest split
    return replace(
        profile, name=f"{profile.name}-smoke", cut=DataCut(),
        tour=replace(profile.tour, clips_per_scene=2 * len(profile.tour.devices), epochs=2, batch_size=16),
        data=replace(profile.data, twin_size="tiny"),
        beats=replace(profile.beats, pretrain_epochs=2, pretrain_batch_size=8, sl_epochs=1, probe_steps=5,
                      tokenizer_epochs=1),
        teachers=replace(profile.teachers, splits=ends, frozen=short(profile.teachers.frozen, 4),
                         finetune=short(profile.teachers.finetune, 4), finetune_epochs=()),
        student=replace(profile.student, splits=ends, recipe=short(profile.student.recipe, 8), calibration_clips=16))


PROFILES["full-smoke"] = smoke(PROFILES["full"])


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


def differences(a, b, prefix: str = "") -> list[tuple[str, object, object]]:
    """Every setting where ``a`` and ``b`` (dataclasses of the same type) differ, as
    ``(dotted name, a's value, b's value)``; nested dataclasses are compared field by field."""
    out = []
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if hasattr(x, "__dataclass_fields__"):
            out += differences(x, y, f"{prefix}{name}.")
        elif x != y:
            out.append((f"{prefix}{name}", x, y))
    return out
