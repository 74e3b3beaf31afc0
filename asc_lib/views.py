"""Consistent views for distillation: the teacher scores the very augmented clip the student sees.

The paper's recipe (the book's default) takes the teacher's logits once, on clean clips, and mixes them with
the student's mixup: the student is asked to match, on a mixed clip, a mix of the teacher's answers on two
clean ones, which is not what the teacher would say of the mix. Beyer et al. (2022, *Knowledge distillation:
a good teacher is patient and consistent*) found that a student matches its teacher best when both see the
same augmented input, and for long. CED (Dinkel et al., 2023) makes that cheap: it stores the teacher's
logits for a few augmented views of each clip with the seeds that made them, and the student draws one of
those views each time it meets the clip.

A view here is a waveform mix and a circular shift, drawn from ``(seed, clip, view)``::

    view(i, v) = roll(lam * w[i] + (1 - lam) * w[partner], shift)      lam ~ Beta(alpha, alpha)

with the partner drawn from the same training clips. It is rendered at 16 kHz for the teacher (BEATs fbank)
and at 32 kHz for the student (its log-mel), so both see the same sound. :func:`make_views` returns the
plan (partners, lambdas, shifts: the "seeds"), the teacher's logits on every view and the student's
log-mels of every view; :func:`asc_lib.distill.run_student` trains on them with ``views=k``.
"""

from __future__ import annotations

import numpy as np
import torch

from .features import beats_fbank, student_logmel_all
from .train import predict_logits


def plan(n: int, k: int, alpha: float, seed: int) -> dict[str, np.ndarray]:
    """``k`` views of each of ``n`` clips: ``partner`` (n, k) positions in 0..n-1, ``lam`` (n, k) float32
    (Beta(alpha, alpha); 1 when ``alpha <= 0``: no mix) and ``shift`` (n, k) float32 in [0, 1), the share of
    the clip the view is rolled by. Drawn from ``seed`` alone."""
    if n < 1 or k < 1:
        raise ValueError(f"views: need at least one clip and one view, got n={n}, k={k}")
    rng = np.random.default_rng([seed, 17])
    partner = rng.integers(0, n, size=(n, k))
    lam = rng.beta(alpha, alpha, size=(n, k)) if alpha > 0 else np.ones((n, k))
    shift = rng.random((n, k))
    return {"partner": partner, "lam": lam.astype(np.float32), "shift": shift.astype(np.float32)}


def render(waves, rows: np.ndarray, views: dict, v: int) -> torch.Tensor:
    """View ``v`` of every clip: ``waves`` (N, T) indexed by ``rows`` (the clips, in plan order) ->
    (n, T) float32. The shift is a share of T, so the same view at 16 and 32 kHz is the same sound."""
    a = torch.from_numpy(np.asarray(waves[rows], dtype=np.float32))  # (n, T)
    b = torch.from_numpy(np.asarray(waves[rows[views["partner"][:, v]]], dtype=np.float32))
    lam = torch.from_numpy(views["lam"][:, v]).unsqueeze(1)  # (n, 1)
    mixed = lam * a + (1 - lam) * b
    t = mixed.shape[1]
    offset = torch.from_numpy((views["shift"][:, v] * t).astype(np.int64)).unsqueeze(1)  # (n, 1)
    idx = (torch.arange(t).unsqueeze(0) - offset) % t  # torch.roll by each row's own offset
    return mixed.gather(1, idx)


def make_views(teacher_models, w16, w32, rows: np.ndarray, *, k: int, alpha: float, seed: int, n_mels: int,
               device, batch: int = 64) -> dict:
    """Views of the clips at ``rows`` (:func:`plan`), with the mean logits of ``teacher_models`` on each
    (the ensemble's, for several) and the student's log-mels of each:
    ``{"partner", "lam", "shift", "logits": (n, k, C) float32, "features": (n, k, 1, n_mels, frames) float16}``."""
    views = plan(len(rows), k, alpha, seed)
    logits, feats = [], []
    for v in range(k):
        fbank = beats_fbank(render(w16, rows, views, v))  # (n, F, 128)
        z = [predict_logits(m, len(rows), lambda i: fbank[i], device=device, batch_size=batch)
             for m in teacher_models]
        logits.append(np.mean(z, axis=0))
        feats.append(student_logmel_all(render(w32, rows, views, v).numpy(), n_mels=n_mels, progress=False))
    return {**views, "logits": np.stack(logits, 1).astype(np.float32), "features": torch.stack(feats, 1)}
