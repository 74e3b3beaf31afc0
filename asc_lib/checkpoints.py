"""The BEATs checkpoints the book uses.

- a small BEATs pre-trained here with BEATs' objective on the twin's unlabeled pool (**SSL**), then
  tagged on the pool's event tags (**SSL+SL**), both saved in the official format (every profile;
  ``full`` trains longer), and its next iteration (a tokenizer distilled from that SSL encoder, then
  pre-training again on its labels), which the BEATs chapter probes beside the first;
- the official files (``OFFICIAL``: ``BEATs_iter3_plus_AS2M.pt``, ``..._finetuned_on_AS2M_cpt2.pt``) from
  a local folder, with the ``full`` profile (see :func:`asc_lib.data.download.fetch_beats_checkpoint`).

Pre-training runs once per configuration: checkpoints and training histories are cached under
``artifacts/<profile>/beats/`` keyed by everything that produced them; ``history.json`` is written
last, with the hash of each checkpoint's bytes, so an interrupted run is redone, never trusted, and a
checkpoint changed since is an error naming it. One process pre-trains a configuration at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from .data.dataset import pool_waves
from .data.download import fetch_beats_checkpoint
from .integrity import IntegrityError, build_lock, hashes, verify
from .models.beats import BEATs, BEATsCheckpointError, load_beats_checkpoint, released_config, save_beats_checkpoint
from .paths import artifacts_dir
from .pretrain import (MaskedPatchModel, RandomProjectionTokenizer, SelfDistilledTokenizer, pool_fbank, pretrain,
                       small_config, tag_finetune, teacher_tokens, train_tokenizer)
from .profiles import Profile
from .repro import seed_everything

PRETRAIN_VERSION = 4  # bump when pre-training's results change
ROWS = 10  # rows of a pre-training history per pass: a curve even for one pass over a large pool
OFFICIAL = {"SSL": "BEATs_iter3_plus_AS2M.pt", "SSL+SL": "BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt"}


# what fixes the released checkpoints' shapes and forward pass (dropouts and layer-drop only act in training)
ARCHITECTURE = ("input_patch_size", "embed_dim", "conv_bias", "encoder_layers", "encoder_embed_dim",
                "encoder_ffn_embed_dim", "encoder_attention_heads", "activation_fn", "deep_norm", "layer_norm_first",
                "relative_position_embedding", "num_buckets", "max_distance", "gru_rel_pos", "conv_pos",
                "conv_pos_groups", "finetuned_model")


def official(folder, profile: Profile) -> dict:
    """The official BEATs files in ``folder`` as ``{"SSL": path, "SSL+SL": path}``, checked before any
    training: each is the file the README names (size, and SHA-256 where known), loads strictly, and has
    the released 12-layer architecture (the fine-tuned one with its 527-class predictor). A smoke profile
    (``profile.cut``) takes official-format files with other weights (the tests' random ones): it skips
    only the size and SHA-256."""
    paths = {}
    for key, name in OFFICIAL.items():
        path = Path(folder) / name
        if profile.cut is not None and not path.is_file():
            raise FileNotFoundError(f"{path} not found: the smoke run takes the official files, or official-format "
                                    "ones made by python -m asc_lib.smoke fixtures DIR (then beats_dir DIR/beats)")
        if profile.cut is None:
            path = fetch_beats_checkpoint(name, folder)  # a clear error when missing or not the official file
        cfg = load_beats_checkpoint(path).cfg
        want = released_config(finetuned=key == "SSL+SL")
        keys = ARCHITECTURE + (("predictor_class",) if want.finetuned_model else ())
        wrong = [f"{k}={getattr(cfg, k)!r} (released: {getattr(want, k)!r})" for k in keys
                 if getattr(cfg, k) != getattr(want, k)]
        if wrong:
            raise BEATsCheckpointError(f"{path}: not the released {name} architecture: {', '.join(wrong)}")
        paths[key] = path
    return paths


def small_beats(profile: Profile, twin: Path, *, seed: int, device) -> dict:
    """Pre-train (or reuse) the small BEATs on the unlabeled pool of the synthetic twin at ``twin``.

    Returns ``{"SSL": path, "SSL+SL": path, "history": {"pretrain": [...], "sl": [...]}}``.
    """
    settings = profile.beats
    manifest = (Path(twin) / "twin.json").read_text()
    # the later iterations' settings do not change this one
    iter1 = {k: v for k, v in asdict(settings).items() if not k.startswith("tokenizer_") and k != "iterations"}
    payload = json.dumps([PRETRAIN_VERSION, iter1, small_config().to_dict(), manifest, seed],
                         sort_keys=True, default=str)
    folder = artifacts_dir(profile.name) / "beats" / f"small-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"
    paths = {"SSL": folder / "BEATs_small_SSL.pt", "SSL+SL": folder / "BEATs_small_SSL_SL.pt"}
    record = folder / "history.json"
    if not record.exists():  # finished (the record is written last): read without the lock
        with build_lock(folder, "small BEATs pre-training"):
            if not record.exists():
                return _small_beats(profile, twin, seed, device, paths, record)
    print(f"small BEATs: reusing {folder}", file=sys.stderr)
    return {**paths, "history": _read_record(record, paths.values())}


def _read_record(record: Path, paths) -> dict:
    """The history in ``record``, after checking every checkpoint in ``paths`` against the hashes it keeps."""
    folder = record.parent
    try:
        saved = json.loads(record.read_text())
    except (OSError, ValueError) as err:
        raise IntegrityError(f"{record}: cannot be read ({err}); delete {folder} to pre-train again") from err
    files = saved.pop("files", {})
    for path in paths:
        verify(path, files.get(Path(path).name), f"delete {folder} to pre-train again")
    return saved


def _write_record(record: Path, history: dict, paths) -> None:
    """``history`` and the checkpoints' hashes, written last (atomically): it marks the folder complete."""
    tmp = record.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({**history, "files": hashes(record.parent, [Path(p).name for p in paths])}, indent=1))
    os.replace(tmp, record)


def _small_beats(profile: Profile, twin: Path, seed: int, device, paths: dict, record: Path) -> dict:
    settings = profile.beats
    waves, tag_names, targets = pool_waves(twin, profile)
    fbank = pool_fbank(waves)
    generator = seed_everything(seed, threads=profile.threads)
    model = MaskedPatchModel(BEATs(small_config()), RandomProjectionTokenizer(seed=seed))
    history = {"pretrain": pretrain(model, fbank, epochs=settings.pretrain_epochs,
                                    batch_size=settings.pretrain_batch_size, lr=settings.pretrain_lr,
                                    mask_ratio=settings.mask_ratio, generator=generator, device=device,
                                    rows_per_epoch=ROWS),
               "sl": []}
    save_beats_checkpoint(model.beats.cpu(), paths["SSL"])
    n = settings.sl_clips or len(fbank)
    tagged = tag_finetune(model.beats, fbank[:n], targets[:n], epochs=settings.sl_epochs,
                          batch_size=settings.pretrain_batch_size, lr=settings.sl_lr, generator=generator,
                          device=device, tag_names=tag_names, history=history["sl"], rows_per_epoch=ROWS)
    save_beats_checkpoint(tagged, paths["SSL+SL"])
    _write_record(record, history, paths.values())
    return {**paths, "history": history}


def next_iteration(profile: Profile, twin: Path, previous: dict, *, seed: int, device) -> dict:
    """BEATs' next iteration at small scale (or its cached result): a tokenizer distilled from the SSL
    encoder of ``previous`` (what :func:`small_beats` returned: iteration 2; what this returned: 3, ...), then
    a new small BEATs pre-trained from random weights on that tokenizer's labels with iteration 1's
    amounts, so that only the labels differ. Returns ``{"SSL": path, "history": {"tokenizer": [...],
    "pretrain": [...]}}``."""
    settings = profile.beats
    teacher_hash = hashlib.sha256(Path(previous["SSL"]).read_bytes()).hexdigest()
    payload = json.dumps([PRETRAIN_VERSION, {k: v for k, v in asdict(settings).items() if k != "iterations"},
                          small_config().to_dict(),
                          (Path(twin) / "twin.json").read_text(), seed, teacher_hash], sort_keys=True, default=str)
    folder = artifacts_dir(profile.name) / "beats" / f"next-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"
    path, record = folder / "BEATs_small_SSL.pt", folder / "history.json"
    if not record.exists():  # finished (the record is written last): read without the lock
        with build_lock(folder, "small BEATs, next iteration"):
            if not record.exists():
                return _next_iteration(profile, twin, previous, seed, device, path, record)
    print(f"small BEATs, next iteration: reusing {folder}", file=sys.stderr)
    return {"SSL": path, "history": _read_record(record, [path])}


def _next_iteration(profile: Profile, twin: Path, previous: dict, seed: int, device, path: Path,
                    record: Path) -> dict:
    settings = profile.beats
    record.parent.mkdir(parents=True, exist_ok=True)
    fbank = pool_fbank(pool_waves(twin, profile)[0])
    generator = seed_everything(seed, threads=profile.threads)
    teacher = load_beats_checkpoint(previous["SSL"])
    tokenizer = SelfDistilledTokenizer(teacher.cfg.encoder_embed_dim)
    history = {"tokenizer": train_tokenizer(tokenizer, fbank, teacher_tokens(teacher, fbank, device=device),
                                            epochs=settings.tokenizer_epochs,
                                            batch_size=settings.pretrain_batch_size,
                                            lr=settings.tokenizer_lr, generator=generator, device=device)}
    model = MaskedPatchModel(BEATs(small_config()), tokenizer)
    history["pretrain"] = pretrain(model, fbank, epochs=settings.pretrain_epochs,
                                   batch_size=settings.pretrain_batch_size, lr=settings.pretrain_lr,
                                   mask_ratio=settings.mask_ratio, generator=generator, device=device,
                                   rows_per_epoch=ROWS)
    save_beats_checkpoint(model.beats.cpu(), path)
    _write_record(record, history, [path])
    return {"SSL": path, "history": history}


def random_small_beats(seed: int) -> BEATs:
    """The small BEATs with random weights drawn from ``seed`` alone (not from the global random state,
    which depends on whether pre-training ran or was reused): the probe's baseline."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return BEATs(small_config())
