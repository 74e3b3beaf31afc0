"""What an encoder has learned: clip embeddings, a linear probe, a 2-D view (PCA)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn



@torch.no_grad()
def embed(model, waves, *, device: torch.device, batch: int = 64, layer: int = -1) -> torch.Tensor:
    """Mean over patch tokens of one encoder layer's output (``-1``: the last) for 16 kHz ``waves``
    (N, T): (N, C) float32 on the CPU. The model is put in eval mode."""
    model.to(device).eval()
    out = []
    for i in range(0, len(waves), batch):
        chunk = torch.from_numpy(np.array(waves[i:i + batch], dtype=np.float32)).to(device)
        _, _, hidden = model.extract_features(chunk, return_layers=True)
        out.append(hidden[layer].mean(1).float().cpu())
    return torch.cat(out)


def linear_probe(x_train: torch.Tensor, y_train, x_test: torch.Tensor, *, n_classes: int,
                 steps: int = 500, lr: float = 1e-2, weight_decay: float = 1e-3, seed: int = 0) -> np.ndarray:
    """Predicted classes of the test set by a linear classifier trained on frozen embeddings
    (standardised with the training statistics; full-batch Adam, cross-entropy)."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    a, b = (x_train - mean) / std, (x_test - mean) / std
    y = y_train.clone() if torch.is_tensor(y_train) else torch.from_numpy(np.array(y_train))  # writable copy
    torch.manual_seed(seed)
    head = nn.Linear(a.shape[1], n_classes)
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay, fused=True)  # see train.py
    for _ in range(steps):
        loss = nn.functional.cross_entropy(head(a), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return head(b).argmax(1).numpy()


def pca_2d(x: torch.Tensor) -> np.ndarray:
    """The first two principal components of ``x`` (N, C): (N, 2)."""
    centred = x - x.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    return (centred @ v[:2].T).numpy()


def compare(encoders: dict, waves, train_rows, y_train, test_rows, *, n_classes: int, device: torch.device,
            steps: int = 500, seed: int = 0) -> dict:
    """Linear-probe predictions on the clips ``waves[test_rows]`` of each frozen encoder in ``encoders``
    ({name: BEATs}), trained on the clips ``waves[train_rows]``: ``{name: predicted classes}``."""
    return {name: linear_probe(embed(model, waves[train_rows], device=device), y_train,
                               embed(model, waves[test_rows], device=device), n_classes=n_classes, steps=steps,
                               seed=seed)
            for name, model in encoders.items()}
