"""Simplified CP-Mobile, the DCASE 2024 Task 1 baseline student (a comparison row for TF-SepNet).

Follows ``CPJKU/dcase2024_task1_baseline``: ``models/baseline.py`` (``Block``, ``Network``,
``get_model``, ``initialize_weights``), ``make_divisible`` from its helpers, and the defaults of its
``run_training.py`` (base channels 32, channels multiplier 1.8, expansion rate 2.1, blocks (3, 2, 1),
strides b2 (1, 1), b3 (1, 2), b4 (2, 1)). The README gives 61,148 parameters and 29,419,156 MACs for
one 1 s log-mel (1, 1, 256, 65), counted with torchinfo (``helpers/nessi.py``). Module names follow
the baseline's (``in_c``, ``stages.s1.b1.block``, ``feed_forward``; each conv block is a
``Sequential`` of conv ``0``, BatchNorm ``1``, ReLU ``2`` like torchvision's ``Conv2dNormActivation``),
so the baseline's state dicts load.

Shapes for the default and input (B, 1, 256, 65):

================  ===================  =========
stage             channels             F x T
================  ===================  =========
in_c (2 x s2)     1 -> 8 -> 32         64 x 17
s1: b1, b2        32 -> 32             64 x 17
s1: b3 s(1, 2)    32 -> 32             64 x 9
s2: b4 s(2, 1)    32 -> 56             32 x 9
s2: b5            56 -> 56             32 x 9
s3: b6            56 -> 104            32 x 9
feed_forward      104 -> 10, BN, mean  (B, 10)
================  ===================  =========
"""

from __future__ import annotations

import torch
from torch import nn


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``v`` to the nearest multiple of ``divisor``, never below 90 % of ``v`` (MobileNet rule)."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def conv_norm_act(c_in: int, c_out: int, kernel_size: int = 3, stride=1, groups: int = 1,
                  relu: bool = True) -> nn.Sequential:
    """Conv2d (no bias, 'same' padding for odd kernels) -> BatchNorm2d -> ReLU (optional)."""
    layers = [nn.Conv2d(c_in, c_out, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
              nn.BatchNorm2d(c_out)]
    return nn.Sequential(*layers, nn.ReLU()) if relu else nn.Sequential(*layers)


class Block(nn.Module):
    """Inverted bottleneck: 1x1 expand -> 3x3 depthwise (with ``stride``) -> 1x1 project, then ReLU.

    (B, C_in, F, T) -> (B, C_out, F / s_f, T / s_t) (rounded up). The expanded width is
    ``make_divisible(C_in * expansion_rate, 8)``. A shortcut is added only when C_in == C_out: identity,
    or a 3x3 average pool with the same stride when the block is strided.
    """

    def __init__(self, c_in: int, c_out: int, expansion_rate: float, stride=(1, 1)):
        super().__init__()
        c_exp = make_divisible(c_in * expansion_rate, 8)
        self.block = nn.Sequential(conv_norm_act(c_in, c_exp, 1),
                                   conv_norm_act(c_exp, c_exp, 3, stride, groups=c_exp),
                                   conv_norm_act(c_exp, c_out, 1, relu=False))
        self.use_shortcut = c_in == c_out
        strided = tuple(stride) != (1, 1)
        self.shortcut = nn.AvgPool2d(3, stride, padding=1) if self.use_shortcut and strided else nn.Identity()
        self.after_block_activation = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        if self.use_shortcut:
            y = y + self.shortcut(x)
        return self.after_block_activation(y)


def initialize_weights(m: nn.Module) -> None:
    """The baseline's init: Kaiming-normal (fan_out) convs, unit/zero norms, N(0, 0.01) linears."""
    if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out")
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, 0, 0.01)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class CPMobile(nn.Module):
    """Simplified CP-Mobile: log-mel (B, in_channels, n_mels, frames) -> logits (B, n_classes).

    Stage widths: ``make_divisible(base_channels * channels_multiplier ** i, 8)`` for stage i (32, 56,
    104 by default), after a stem of two 3x3 stride-2 conv blocks (``in -> base/4 -> base``). Head:
    1x1 conv (no bias) -> BatchNorm -> global average. The default has 61,148 parameters.
    """

    def __init__(self, n_classes: int = 10, in_channels: int = 1, base_channels: int = 32,
                 channels_multiplier: float = 1.8, expansion_rate: float = 2.1, n_blocks=(3, 2, 1),
                 strides: dict | None = None):
        super().__init__()
        strides = dict(b2=(1, 1), b3=(1, 2), b4=(2, 1)) if strides is None else strides
        base = make_divisible(base_channels, 8)
        widths = [base] + [make_divisible(base * channels_multiplier ** i, 8) for i in range(len(n_blocks))]
        self.in_c = nn.Sequential(conv_norm_act(in_channels, base // 4, 3, stride=2),
                                  conv_norm_act(base // 4, base, 3, stride=2))
        self.stages = nn.Sequential()
        k = 0
        for i, n in enumerate(n_blocks):
            stage, c_in = nn.Sequential(), widths[i]
            for _ in range(n):
                k += 1
                stage.add_module(f"b{k}", Block(c_in, widths[i + 1], expansion_rate, strides.get(f"b{k}", (1, 1))))
                c_in = widths[i + 1]
            self.stages.add_module(f"s{i + 1}", stage)
        self.feed_forward = nn.Sequential(nn.Conv2d(widths[-1], n_classes, 1, bias=False),
                                          nn.BatchNorm2d(n_classes), nn.AdaptiveAvgPool2d((1, 1)))
        self.apply(initialize_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feed_forward(self.stages(self.in_c(x))).flatten(1)
