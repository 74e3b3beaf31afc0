"""TF-SepNet: the student (Cai et al., ICASSP 2024; DCASE 2024 Task 1 report of Cai, Li & Shao).

Follows the authors' code, ``yqcai888/easy_dcase_task1``: ``model/backbones.py`` (``TFSepNet``),
``model/shared.py`` (``ConvBnRelu``, ``ResNorm``, ``ShuffleLayer``, ``TimeFreqSepConvolutions``) and
``model/classifiers.py`` (``ConvClassifier``); config ``config/tfsepnet_train.yaml`` (base channels 64,
depth 17; kernel 3 and dropout 0.1 are the class defaults). Module and parameter names follow theirs
(``conv_layers``, ``middle_layers``, ``classifier``, ``_conv``/``_bn``), so their state dicts load.

Shapes for the default TF-SepNet-64, input (B, 1, F, T) with F mels and T frames (T = 65 for 1 s):

====================  ====================  ===========================================
stage                 channels              frequency x time
====================  ====================  ===========================================
input                 1                     F x T
stem (2 convs, s2)    1 -> 32 -> 128        ceil(F/4) x ceil(T/4)   (256x65 -> 64x17)
N 64 64 N             128 -> 64             same
M 96 96 N             64 -> 96              /2                      (32x8)
M 128 128 N           96 -> 128             /2                      (16x4)
M 160 160 160 N       128 -> 160            /2                      (8x2)
head (1x1 conv, mean) 160 -> n_classes      -> (B, n_classes)
====================  ====================  ===========================================

Quantisation notes (INT8 post-training static quantisation is done elsewhere, ``asc_lib/quantize.py``):
every conv is followed by its BatchNorm and ReLU inside one :class:`ConvBnRelu` (an ``nn.Sequential``
of ``_conv``, ``_bn``, ``_relu``), so the three can be fused; ReLUs are ``nn.ReLU`` modules (in place,
as the authors'), not functional calls; :class:`ResNorm` has no parameters and is meant to run in float.

Speed (CPU; ``bench/tfsepnet.py``): the in-place ReLU saves one activation-sized allocation per conv, and
:class:`ResNorm` makes two passes over its input (``var_mean``, ``addcmul``) instead of six.
"""

from __future__ import annotations

import torch
from torch import nn

# Depth 17 body from the authors' ``backbones.py``: N = ResNorm, M = MaxPool 2x2, a number = a
# TF-separable block with that many times ``base_channels`` output channels.
BODY_17 = ["N", 1, 1, "N", "M", 1.5, 1.5, "N", "M", 2, 2, "N", "M", 2.5, 2.5, 2.5, "N"]
BODY_16 = ["N", 1, 1, "N", "M", 1.5, 1.5, "N", "M", 2, 2, "N", 2.5, 2.5, 2.5, "N"]  # no last M


class ConvBnRelu(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> ReLU (optional); (B, C_in, F, T) -> (B, C_out, F', T')."""

    def __init__(self, c_in: int, c_out: int, kernel_size=1, stride=1, padding=0, groups: int = 1,
                 relu: bool = True):
        super().__init__()
        self.add_module("_conv", nn.Conv2d(c_in, c_out, kernel_size, stride, padding, groups=groups, bias=False))
        self.add_module("_bn", nn.BatchNorm2d(c_out))
        if relu:
            self.add_module("_relu", nn.ReLU(inplace=True))  # in place: BN's output is not needed again


class ResNorm(nn.Module):
    """Residual frequency-wise normalisation: ``lamb * x + (x - mean) / sqrt(var + eps)``.

    Mean and (unbiased, as ``torch.var``) variance are taken per example and per frequency bin over
    channels and time, dims (1, 3) of (B, C, F, T); shape is unchanged. No parameters (the authors'
    ``ResNorm`` in ``shared.py`` keeps lambda = 0.1 and eps = 1e-5 as constants).
    """

    def __init__(self, lamb: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.lamb = lamb
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, (1, 3), keepdim=True)  # (B, 1, F, 1) each, one pass over x
        inv_std = torch.rsqrt(var + self.eps)
        # lamb * x + (x - mean) * inv_std  ==  x * (lamb + inv_std) - mean * inv_std: one pass, (B, C, F, T)
        return torch.addcmul(-mean * inv_std, x, inv_std + self.lamb)

    def extra_repr(self) -> str:
        return f"lamb={self.lamb}, eps={self.eps}"


class ChannelShuffle(nn.Module):
    """Channel shuffle with ``groups`` groups (the authors' ``ShuffleLayer``); (B, C, F, T) kept.

    View channels as (C / groups, groups), swap the two axes, flatten back. With groups = C / 2, as in
    the TF-separable block, the two channel halves are interleaved: output 2i is input i, output 2i+1
    is input C/2 + i.
    """

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, f, t = x.shape
        x = x.reshape(b, c // self.groups, self.groups, f, t).transpose(1, 2)
        return x.reshape(b, c, f, t)


class TFSepBlock(nn.Module):
    """Time-frequency separable convolutions (the authors' ``TimeFreqSepConvolutions``).

    (B, C_in, F, T) -> (B, C_out, F, T):

    1. 1x1 transition ConvBnRelu C_in -> C_out, only when C_in != C_out;
    2. channel shuffle, split into two halves of C_out / 2 channels;
    3. half 1: depthwise (k x 1) frequency ConvBnRelu -> mean over frequency (B, C/2, 1, T) ->
       1x1 ConvBnRelu -> dropout -> + half 1 (broadcast back to F x T);
    4. half 2: depthwise (1 x k) time ConvBnRelu -> mean over time (B, C/2, F, 1) ->
       1x1 ConvBnRelu -> dropout -> + half 2 (broadcast back to F x T);
    5. concatenate the halves.

    The copy of ``shared.py`` in the authors' repository also appends an SE block (``self.se``); that
    does not belong to TF-SepNet-64 as published (126,858 parameters) and is left out here.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, dropout: float = 0.1):
        super().__init__()
        if c_out % 2:
            raise ValueError(f"out channels must be even, got {c_out}")
        half, pad = c_out // 2, (kernel_size - 1) // 2
        self.trans_conv = ConvBnRelu(c_in, c_out, 1) if c_in != c_out else None
        self.shuffle_layer = ChannelShuffle(groups=half)
        self.freq_dw_conv = ConvBnRelu(half, half, (kernel_size, 1), padding=(pad, 0), groups=half)
        self.freq_pw_conv = ConvBnRelu(half, half, 1)
        self.temp_dw_conv = ConvBnRelu(half, half, (1, kernel_size), padding=(0, pad), groups=half)
        self.temp_pw_conv = ConvBnRelu(half, half, 1)
        self.dropout_layer = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.trans_conv is not None:
            x = self.trans_conv(x)
        x = self.shuffle_layer(x)
        x1, x2 = torch.chunk(x, 2, dim=1)
        y1 = self.dropout_layer(self.freq_pw_conv(self.freq_dw_conv(x1).mean(2, keepdim=True))) + x1
        y2 = self.dropout_layer(self.temp_pw_conv(self.temp_dw_conv(x2).mean(3, keepdim=True))) + x2
        return torch.cat((y1, y2), dim=1)


class ConvClassifier(nn.Module):
    """Head: 1x1 conv (with bias) C -> n_classes, then mean over frequency and time; -> (B, n_classes)."""

    def __init__(self, c_in: int, n_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, n_classes, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean((2, 3))


class TFSepNet(nn.Module):
    """TF-SepNet: log-mel (B, in_channels, n_mels, frames) -> logits (B, n_classes).

    Stem: ConvBnRelu 3x3 stride 2 ``in_channels -> base/2``, ConvBnRelu 3x3 stride 2 grouped
    (``base/2`` groups) ``base/2 -> 2 base``. Body: :data:`BODY_17` (or :data:`BODY_16`), channels
    ``int(factor * base_channels)``. Head: :class:`ConvClassifier`. The default (base 64, depth 17)
    has 126,858 parameters. Works for any input of at least 16 x 16 (four halvings of the time axis
    take 65 frames to 2).
    """

    def __init__(self, n_classes: int = 10, in_channels: int = 1, base_channels: int = 64, depth: int = 17,
                 kernel_size: int = 3, dropout: float = 0.1):
        super().__init__()
        if base_channels % 2:
            raise ValueError(f"base_channels must be even, got {base_channels}")
        body = {16: BODY_16, 17: BODY_17}[depth]
        self.conv_layers = nn.Sequential(
            ConvBnRelu(in_channels, base_channels // 2, 3, stride=2, padding=1),
            ConvBnRelu(base_channels // 2, 2 * base_channels, 3, stride=2, padding=1, groups=base_channels // 2),
        )
        layers, c = [], 2 * base_channels
        for v in body:
            if v == "N":
                layers.append(ResNorm())
            elif v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers.append(TFSepBlock(c, int(v * base_channels), kernel_size, dropout))
                c = int(v * base_channels)
        self.middle_layers = nn.Sequential(*layers)
        self.classifier = ConvClassifier(c, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.middle_layers(self.conv_layers(x)))
