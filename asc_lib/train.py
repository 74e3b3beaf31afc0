"""Training and prediction.

For now a plain supervised loop on in-memory tensors (the Quick tour); the teachers and students
of later chapters grow it (schedules, augmentation, resume, DDP).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm import tqdm


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, batch_size: int, lr: float,
        device: torch.device, generator: torch.Generator) -> list[dict]:
    """Train ``model`` on ``(x, y)`` with Adam and cross-entropy; one log line per epoch.

    ``generator`` decides the batch order, so a seeded run repeats. Returns the per-epoch history.
    """
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    bar = tqdm(range(1, epochs + 1), desc="training", unit="epoch")
    for epoch in bar:
        order = torch.randperm(len(x), generator=generator)
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            xb, yb = x[idx].to(device).float(), y[idx].to(device)
            logits = model(xb)
            loss = nn.functional.cross_entropy(logits, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(1) == yb).sum().item()
            total += len(idx)
        history.append({"epoch": epoch, "loss": loss_sum / total, "train_acc": correct / total})
        bar.set_postfix(loss=f"{loss_sum / total:.3f}")
    last = history[-1]
    print(f"trained {epochs} epochs on {len(x)} examples: final loss {last['loss']:.3f}, "
          f"train accuracy {100 * last['train_acc']:.1f} %")
    return history


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, *, device: torch.device, batch_size: int = 256) -> np.ndarray:
    """Predicted class of each example (eval mode)."""
    model.to(device).eval()
    out = [model(x[i:i + batch_size].to(device).float()).argmax(1).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy()
