"""A tiny CNN for the Quick tour: three conv blocks, global pooling, a linear classifier."""

from __future__ import annotations

from torch import nn


class TinyCNN(nn.Module):
    def __init__(self, n_classes: int = 10, width: int = 16):
        super().__init__()

        def block(c_in, c_out):
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                                 nn.BatchNorm2d(c_out), nn.ReLU())

        self.features = nn.Sequential(block(1, width), block(width, 2 * width), block(2 * width, 4 * width))
        self.head = nn.Linear(4 * width, n_classes)

    def forward(self, x):  # x: (B, 1, mels, frames)
        x = self.features(x)  # (B, 4w, mels / 8, frames / 8)
        return self.head(x.mean(dim=(2, 3)))  # (B, n_classes)
