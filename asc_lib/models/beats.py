"""BEATs (Chen et al., ICML 2023): the audio transformer the teachers are built on, in one file.

A re-implementation of the model in the official code (``microsoft/unilm``, folder ``beats/``), written
from its maths, with the official parameter names, so that the released checkpoints
(``torch.save({'cfg': dict, 'model': state_dict})``, fine-tuned ones with ``'label_dict'``) load with
``load_state_dict(strict=True)`` and files written here load in the official code.

Shapes: B batch, N samples, F fbank frames, T patch tokens, C channels, H heads, D head size.

    waveform (B, N) 16 kHz
      -> kaldi fbank, normalised (B, F, 128)              [asc_lib.features.beats_fbank]
      -> 16x16 patches, conv (B, 512, F/16, 8) -> (B, T, 512), T = F/16 * 8 (time-major)
      -> LayerNorm, Linear 512 -> 768 (B, T, C)
      -> + grouped conv positional embedding, LayerNorm
      -> 12 post-LN ("deep norm") transformer layers with a gated relative position bias
      -> (B, T, C); fine-tuned: linear 768 -> 527, mean over tokens, sigmoid (B, 527)

Attention runs through ``F.scaled_dot_product_attention`` with the relative position bias and the key
padding as a float mask; ``use_sdpa=False`` switches to the explicit softmax (used by the tests).
The official code computes ``(q k^T / sqrt(D) - rowmax) * 32`` with ``q`` pre-divided by 32 (a
fp16-stability trick); softmax is shift-invariant, so this is the same attention up to rounding.
"""

from __future__ import annotations

import math
import os
import pickle
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from asc_lib.features import BEATS_FBANK_MEAN, BEATS_FBANK_STD, beats_fbank
from asc_lib.kernels import applies as kernels_pinned

__all__ = ["BEATsConfig", "BEATs", "BEATsCheckpointError", "Linear", "load_beats_checkpoint",
           "save_beats_checkpoint", "released_config", "relative_position_bucket"]

ACTIVATIONS = ("relu", "gelu", "gelu_fast", "gelu_accurate", "tanh", "linear")


# --------------------------------------------------------------------------------------------- config

@dataclass
class BEATsConfig:
    """The official ``BEATsConfig`` keys and defaults (``beats/BEATs.py``), nothing more."""
    input_patch_size: int = -1  # patch size of the patch embedding (-1: unset; released models: 16)
    embed_dim: int = 512  # patch embedding dimension
    conv_bias: bool = False  # bias in the patch embedding conv
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_wise_gradient_decay_ratio: float = 1.0  # gradient scale applied before each layer
    layer_norm_first: bool = False  # pre-LN transformer (not used by any released model)
    deep_norm: bool = False  # DeepNorm residual scaling (2 L)^(1/4)
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.0
    dropout_input: float = 0.0
    conv_pos: int = 128  # kernel of the convolutional positional embedding
    conv_pos_groups: int = 16
    relative_position_embedding: bool = False
    num_buckets: int = 320
    max_distance: int = 1280
    gru_rel_pos: bool = False  # gate the relative position bias per query
    finetuned_model: bool = False  # has a label predictor
    predictor_dropout: float = 0.1
    predictor_class: int = 527

    @classmethod
    def from_dict(cls, d: dict) -> "BEATsConfig":
        """Build from a checkpoint's ``cfg`` dict; unknown keys or unsupported values -> ValueError."""
        if not isinstance(d, dict):
            raise ValueError(f"BEATs cfg must be a dict, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in d if k not in known)
        if unknown:
            raise ValueError(f"unknown BEATs cfg key(s): {unknown} (known keys: {sorted(known)})")
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        """Check types and that the values are ones this implementation supports."""
        for f in fields(self):
            v, default = getattr(self, f.name), f.default
            if isinstance(default, bool):
                ok = isinstance(v, bool)
            elif isinstance(default, int):
                ok = isinstance(v, int) and not isinstance(v, bool)
            elif isinstance(default, float):
                ok = isinstance(v, (int, float)) and not isinstance(v, bool)
            else:
                ok = isinstance(v, str)
            if not ok:
                raise ValueError(f"BEATs cfg {f.name}={v!r}: expected {type(default).__name__}")

        def need(cond, msg):
            if not cond:
                raise ValueError(f"unsupported BEATs cfg: {msg}")

        need(self.input_patch_size >= 1, f"input_patch_size={self.input_patch_size} (must be >= 1; "
             "the official default -1 means unset, released models use 16)")
        for name in ("embed_dim", "encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim",
                     "encoder_attention_heads", "conv_pos", "conv_pos_groups", "predictor_class"):
            need(getattr(self, name) >= 1, f"{name}={getattr(self, name)} (must be >= 1)")
        need(self.encoder_embed_dim % self.encoder_attention_heads == 0,
             f"encoder_embed_dim={self.encoder_embed_dim} not divisible by "
             f"encoder_attention_heads={self.encoder_attention_heads}")
        need(self.encoder_embed_dim % self.conv_pos_groups == 0,
             f"encoder_embed_dim={self.encoder_embed_dim} not divisible by conv_pos_groups={self.conv_pos_groups}")
        need(self.activation_fn in ACTIVATIONS,
             f"activation_fn={self.activation_fn!r} (supported: {ACTIVATIONS}; 'glu' is not implemented)")
        need(not self.layer_norm_first, "layer_norm_first=True (the pre-LN variant is not implemented; "
             "all released BEATs models are post-LN)")
        for name in ("dropout", "attention_dropout", "activation_dropout", "encoder_layerdrop",
                     "dropout_input", "predictor_dropout"):
            need(0.0 <= getattr(self, name) < 1.0, f"{name}={getattr(self, name)} (must be in [0, 1))")
        if self.relative_position_embedding:
            need(self.num_buckets >= 4, f"num_buckets={self.num_buckets} (must be >= 4)")
            need(self.max_distance > self.num_buckets // 4,
                 f"max_distance={self.max_distance} (must exceed num_buckets // 4 = {self.num_buckets // 4})")


def released_config(finetuned: bool = False) -> BEATsConfig:
    """The architecture of the released BEATs iter checkpoints (pre-trained, or fine-tuned on
    AudioSet-2M with a 527-class predictor). Dropouts, layerdrop and the gradient decay ratio only
    act in training and are given as the project sheet has them; loading a file always uses the
    file's own cfg."""
    drop = 0.0 if finetuned else 0.1
    return BEATsConfig(input_patch_size=16, embed_dim=512, conv_bias=False, encoder_layers=12,
                       encoder_embed_dim=768, encoder_ffn_embed_dim=3072, encoder_attention_heads=12,
                       activation_fn="gelu", layer_wise_gradient_decay_ratio=0.6,
                       layer_norm_first=False, deep_norm=True, dropout=drop, attention_dropout=drop,
                       activation_dropout=drop, encoder_layerdrop=0.05, dropout_input=drop,
                       conv_pos=128, conv_pos_groups=16, relative_position_embedding=True,
                       num_buckets=320, max_distance=800, gru_rel_pos=True, finetuned_model=finetuned,
                       predictor_dropout=drop, predictor_class=527)


# -------------------------------------------------------------------------------------------- helpers

def activation(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "gelu":  # the official computes gelu in float32
        return F.gelu(x.float()).type_as(x)
    if name in ("gelu_fast", "gelu_accurate"):
        return F.gelu(x, approximate="tanh")
    if name == "relu":
        return F.relu(x)
    if name == "tanh":
        return torch.tanh(x)
    return x  # linear


class GradMultiply(torch.autograd.Function):
    """Identity forward; scales the gradient (layer-wise gradient decay)."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


def relative_position_bucket(rel: torch.Tensor, num_buckets: int, max_distance: int) -> torch.Tensor:
    """Bidirectional T5-style buckets of relative positions ``key - query``: half the buckets per
    direction (positive offsets get the upper half); exact below ``num_buckets // 4``, log-spaced up
    to ``max_distance``, clipped beyond."""
    half = num_buckets // 2
    max_exact = half // 2
    bucket = (rel > 0).long() * half
    rel = rel.abs()
    # clamp only keeps log() finite where the value is not used (rel < max_exact)
    large = max_exact + (torch.log(rel.clamp(min=max_exact).float() / max_exact)
                         / math.log(max_distance / max_exact) * (half - max_exact)).long()
    large = large.clamp(max=half - 1)
    return bucket + torch.where(rel < max_exact, rel, large)


class WeightNormConv1d(nn.Module):
    """Grouped Conv1d with weight norm over the kernel dim, weight = g * v / ||v||, with the norm over
    all dims but 2 (as ``nn.utils.weight_norm(conv, name='weight', dim=2)``: same parameter names)."""

    def __init__(self, channels: int, kernel_size: int, groups: int):
        super().__init__()
        self.groups, self.padding = groups, kernel_size // 2
        self.weight_g = nn.Parameter(torch.empty(1, 1, kernel_size))
        self.weight_v = nn.Parameter(torch.empty(channels, channels // groups, kernel_size))
        self.bias = nn.Parameter(torch.zeros(channels))

    def weight(self) -> torch.Tensor:
        return self.weight_v * (self.weight_g / self.weight_v.norm(dim=(0, 1), keepdim=True))

    def forward(self, x):  # (B, C, T) -> (B, C, T + 1 - kernel % 2)
        return F.conv1d(x, self.weight(), self.bias, padding=self.padding, groups=self.groups)


class SamePad(nn.Module):
    """Drop the extra last step an even kernel with padding k // 2 adds."""

    def __init__(self, kernel_size: int):
        super().__init__()
        self.remove = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x):  # (B, C, T + remove) -> (B, C, T)
        return x[:, :, :-self.remove] if self.remove else x


# -------------------------------------------------------------------------------------------- modules

_ONEDNN_LINEAR = kernels_pinned()  # read once, like the pinning itself (set before torch loads)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same state dict) whose float32 product on the CPU runs, when the
    kernels are pinned (:mod:`asc_lib.kernels`), as a 1x1 convolution on oneDNN's AVX2 kernels: MKL's
    pinned (COMPATIBLE) sgemm is 2-4x slower than its native one, with the same bits on every CPU
    ``bench/cross_cpu.py`` checked. The rows are the pixels of a (1, in, 1, rows) image in channels-last
    order, which is ``x`` itself: no copy in or out (``bench/linear.py``: 1.4-2x faster than the same
    convolution in (1, in, rows) order, which transposes). Elsewhere, plain ``F.linear``. Not worth it
    for a few outputs (the teachers' 10-class head): there MKL stays faster."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (_ONEDNN_LINEAR and x.device.type == "cpu" and x.dtype == torch.float32):
            return super().forward(x)
        # (1, in, 1, rows) in channels-last order is x itself (no copy), and so is the output
        cols = x.reshape(1, 1, -1, self.in_features).permute(0, 3, 1, 2)
        y = F.conv2d(cols, self.weight[:, :, None, None], self.bias)  # (1, out, 1, rows)
        return y.permute(0, 2, 3, 1).reshape(*x.shape[:-1], self.out_features)


class MultiheadAttention(nn.Module):
    def __init__(self, cfg: BEATsConfig, relative_attention_bias: nn.Embedding | None):
        super().__init__()
        C, H = cfg.encoder_embed_dim, cfg.encoder_attention_heads
        self.n_head, self.head_dim = H, C // H
        self.dropout = cfg.attention_dropout
        self.q_proj = Linear(C, C)
        self.k_proj = Linear(C, C)
        self.v_proj = Linear(C, C)
        self.out_proj = Linear(C, C)
        if relative_attention_bias is not None:  # one table, shared by every layer (as official)
            self.relative_attention_bias = relative_attention_bias
        self.gru_rel_pos = cfg.gru_rel_pos
        if cfg.gru_rel_pos:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, H, 1, 1))

    def forward(self, x, pos_bias=None, key_padding_mask=None, use_sdpa=True):
        """x (B, T, C); pos_bias (H, T, T) or None; key_padding_mask (B, T) bool, True = padding."""
        B, T, C = x.shape
        H, D = self.n_head, self.head_dim
        q = self.q_proj(x).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(B, T, H, D).transpose(1, 2)
        v = self.v_proj(x).view(B, T, H, D).transpose(1, 2)

        bias = None  # additive attention mask, broadcastable to (B, H, T, T)
        if pos_bias is not None:
            bias = pos_bias.unsqueeze(0)  # (1, H, T, T)
            if self.gru_rel_pos:  # gate per head and query, from the (unscaled) query
                gates = torch.sigmoid(self.grep_linear(q).view(B, H, T, 2, 4).sum(-1))  # (B, H, T, 2)
                gate_a, gate_b = gates.chunk(2, dim=-1)  # (B, H, T, 1) each
                bias = (gate_a * (gate_b * self.grep_a - 1.0) + 2.0) * bias  # (B, H, T, T)
        if key_padding_mask is not None:
            pad = torch.zeros(B, 1, 1, T, dtype=q.dtype, device=q.device)
            pad = pad.masked_fill(key_padding_mask.view(B, 1, 1, T), float("-inf"))
            bias = pad if bias is None else bias + pad
        if bias is not None:
            bias = bias.to(q.dtype)

        p = self.dropout if self.training else 0.0
        if use_sdpa:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(D))  # (B, H, T, T)
            if bias is not None:
                att = att + bias
            att = F.dropout(F.softmax(att.float(), dim=-1).type_as(att), p=p, training=self.training)
            y = att @ v  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.out_proj(y)


class EncoderLayer(nn.Module):
    """Post-LN layer: x = LN(alpha x + attn(x)); x = LN(alpha x + ffn(x)); alpha = (2 L)^(1/4) with
    deep norm, else 1."""

    def __init__(self, cfg: BEATsConfig, relative_attention_bias: nn.Embedding | None):
        super().__init__()
        C = cfg.encoder_embed_dim
        self.self_attn = MultiheadAttention(cfg, relative_attention_bias)
        self.self_attn_layer_norm = nn.LayerNorm(C)
        self.fc1 = Linear(C, cfg.encoder_ffn_embed_dim)
        self.fc2 = Linear(cfg.encoder_ffn_embed_dim, C)
        self.final_layer_norm = nn.LayerNorm(C)
        self.activation_fn = cfg.activation_fn
        self.dropout, self.activation_dropout = cfg.dropout, cfg.activation_dropout
        self.alpha = math.pow(2 * cfg.encoder_layers, 1 / 4) if cfg.deep_norm else 1.0

    def forward(self, x, pos_bias=None, key_padding_mask=None, use_sdpa=True):  # (B, T, C)
        a = self.self_attn(x, pos_bias, key_padding_mask, use_sdpa)
        x = self.self_attn_layer_norm(x * self.alpha + F.dropout(a, self.dropout, self.training))
        h = activation(self.activation_fn, self.fc1(x))  # (B, T, ffn)
        h = self.fc2(F.dropout(h, self.activation_dropout, self.training))
        return self.final_layer_norm(x * self.alpha + F.dropout(h, self.dropout, self.training))


class TransformerEncoder(nn.Module):
    def __init__(self, cfg: BEATsConfig):
        super().__init__()
        C = cfg.encoder_embed_dim
        self.cfg = cfg
        self.pos_conv = nn.Sequential(WeightNormConv1d(C, cfg.conv_pos, cfg.conv_pos_groups),
                                      SamePad(cfg.conv_pos), nn.GELU())
        rel = nn.Embedding(cfg.num_buckets, cfg.encoder_attention_heads) if cfg.relative_position_embedding else None
        self.layers = nn.ModuleList([EncoderLayer(cfg, rel) for _ in range(cfg.encoder_layers)])
        self.layer_norm = nn.LayerNorm(C)

    def position_bias(self, T: int) -> torch.Tensor:
        """(H, T, T) bias from the shared bucket table, indexed by key - query."""
        table = self.layers[0].self_attn.relative_attention_bias
        pos = torch.arange(T, device=table.weight.device)
        buckets = relative_position_bucket(pos[None, :] - pos[:, None], self.cfg.num_buckets,
                                           self.cfg.max_distance)  # (T, T)
        return table(buckets).permute(2, 0, 1)  # (H, T, T)

    def forward(self, x, padding_mask=None, use_sdpa=True):
        """x (B, T, C), padding_mask (B, T) -> (B, T, C) and the list of the input to the first layer
        followed by every layer's output, each (B, T, C)."""
        cfg = self.cfg
        if padding_mask is not None:
            x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        x = F.dropout(self.layer_norm(x), cfg.dropout, self.training)
        pos_bias = self.position_bias(x.size(1)) if cfg.relative_position_embedding else None
        hidden = [x]
        for layer in self.layers:
            if cfg.layer_wise_gradient_decay_ratio != 1.0:
                x = GradMultiply.apply(x, cfg.layer_wise_gradient_decay_ratio)
            if not self.training or cfg.encoder_layerdrop == 0 or torch.rand(()).item() > cfg.encoder_layerdrop:  # layerdrop
                x = layer(x, pos_bias, padding_mask, use_sdpa)
            hidden.append(x)
        return x, hidden


class BEATs(nn.Module):
    def __init__(self, cfg: BEATsConfig, use_sdpa: bool = True):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.use_sdpa = use_sdpa  # False: explicit softmax attention
        self.label_dict: dict | None = None  # fine-tuned checkpoints: class index -> AudioSet MID
        self.embed = cfg.embed_dim
        P = cfg.input_patch_size
        self.patch_embedding = nn.Conv2d(1, self.embed, kernel_size=P, stride=P, bias=cfg.conv_bias)
        self.layer_norm = nn.LayerNorm(self.embed)
        self.post_extract_proj = (Linear(self.embed, cfg.encoder_embed_dim)
                                  if self.embed != cfg.encoder_embed_dim else None)
        self.encoder = TransformerEncoder(cfg)
        self.predictor = nn.Linear(cfg.encoder_embed_dim, cfg.predictor_class) if cfg.finetuned_model else None
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self):
        """As the official: encoder Linear/Embedding N(0, 0.02), deep-norm Xavier gains, pos conv
        N(0, sqrt(4 / (k C))) with g = ||v||; patch embedding, input projection and predictor keep
        PyTorch's defaults."""
        cfg, enc = self.cfg, self.encoder
        for m in enc.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                m.weight.normal_(0.0, 0.02)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    m.bias.zero_()
        conv = enc.pos_conv[0]
        conv.weight_v.normal_(0.0, math.sqrt(4 / (cfg.conv_pos * cfg.encoder_embed_dim)))
        conv.weight_g.copy_(conv.weight_v.norm(dim=(0, 1), keepdim=True))
        conv.bias.zero_()
        if cfg.deep_norm:
            beta = math.pow(8 * cfg.encoder_layers, -1 / 4)
            for layer in enc.layers:
                a = layer.self_attn
                for w, gain in ((a.k_proj.weight, 1.0), (a.v_proj.weight, beta), (a.q_proj.weight, 1.0),
                                (a.out_proj.weight, beta), (layer.fc1.weight, beta), (layer.fc2.weight, beta)):
                    nn.init.xavier_normal_(w, gain=gain)

    # ----------------------------------------------------------------------------------- inputs
    def preprocess(self, source: torch.Tensor, fbank_mean: float = BEATS_FBANK_MEAN,
                   fbank_std: float = BEATS_FBANK_STD) -> torch.Tensor:
        """(B, N) 16 kHz waveform -> normalised fbank (B, F, 128)."""
        fbank = beats_fbank(source.float())
        if fbank_mean != BEATS_FBANK_MEAN or fbank_std != BEATS_FBANK_STD:  # other constants: redo
            fbank = (fbank * (2 * BEATS_FBANK_STD) + BEATS_FBANK_MEAN - fbank_mean) / (2 * fbank_std)
        return fbank

    @staticmethod
    def forward_padding_mask(features: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """Official rule: drop the last ``len % steps`` entries of the mask, cut the rest into
        ``steps = features.size(1)`` equal consecutive chunks; a step is padding only if its whole
        chunk is. (B, L) -> (B, features.size(1)). For patches the chunks are consecutive frames
        in the mask's order, not the frames a (time-major) patch covers: kept as in the official."""
        steps = features.size(1)
        extra = padding_mask.size(1) % steps
        if extra > 0:
            padding_mask = padding_mask[:, :-extra]
        return padding_mask.view(padding_mask.size(0), steps, -1).all(-1)

    # ---------------------------------------------------------------------------------- forward
    def extract_features(self, source: torch.Tensor, padding_mask: torch.Tensor | None = None,
                         fbank_mean: float = BEATS_FBANK_MEAN, fbank_std: float = BEATS_FBANK_STD,
                         *, return_layers: bool = False):
        """As the official: ``source`` (B, N) 16 kHz waveform, ``padding_mask`` (B, N) bool (True =
        padding) -> ``(features (B, T, C), padding_mask (B, T) or None)``; a fine-tuned model returns
        ``(probabilities (B, predictor_class), padding_mask)`` instead. With ``return_layers=True`` a
        third item is added: the encoder's input and every layer's output, ``encoder_layers + 1``
        tensors (B, T, C), for probing."""
        if source.dim() != 2:
            raise ValueError(f"expected waveforms (B, N), got shape {tuple(source.shape)}")
        if padding_mask is not None and padding_mask.shape != source.shape:
            raise ValueError(f"padding_mask shape {tuple(padding_mask.shape)} != source shape {tuple(source.shape)}")
        fbank = self.preprocess(source, fbank_mean, fbank_std)  # (B, F, 128)
        if padding_mask is not None:
            padding_mask = self.forward_padding_mask(fbank, padding_mask.bool())  # (B, F)
        return self.forward_fbank(fbank, padding_mask, return_layers=return_layers)

    def forward_fbank(self, fbank: torch.Tensor, padding_mask: torch.Tensor | None = None,
                      *, return_layers: bool = False):
        """Same as :meth:`extract_features` from a normalised fbank (B, F, 128) and a frame-level
        padding mask (B, F)."""
        x = self.patch_embedding(fbank.unsqueeze(1).to(self.patch_embedding.weight.dtype))  # (B, E, F/P, 128/P)
        x = self.layer_norm(x.flatten(2).transpose(1, 2))  # (B, T, E), time-major tokens
        if padding_mask is not None:
            padding_mask = self.forward_padding_mask(x, padding_mask)  # (B, T)
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)  # (B, T, C)
        x = F.dropout(x, self.cfg.dropout_input, self.training)
        x, hidden = self.encoder(x, padding_mask, self.use_sdpa)
        if self.predictor is not None:
            logits = self.predictor(F.dropout(x, self.cfg.predictor_dropout, self.training))  # (B, T, K)
            if padding_mask is not None and padding_mask.any():  # mean over the non-padding tokens
                logits = logits.masked_fill(padding_mask.unsqueeze(-1), 0.0).sum(1)
                logits = logits / (~padding_mask).sum(1, keepdim=True)
            else:
                logits = logits.mean(1)
            x = torch.sigmoid(logits)  # (B, K)
        return (x, padding_mask, hidden) if return_layers else (x, padding_mask)

    def forward(self, source, padding_mask=None, **kwargs):
        return self.extract_features(source, padding_mask, **kwargs)


# ------------------------------------------------------------------------------------- checkpoints

class BEATsCheckpointError(ValueError):
    """A file that is not a loadable BEATs checkpoint (the message names the file and the reason)."""


def _names(names, n=5) -> str:
    names = sorted(names)
    return ", ".join(names[:n]) + (f", ... ({len(names)} in all)" if len(names) > n else "")


def load_beats_checkpoint(path, map_location="cpu") -> BEATs:
    """Load an official-format BEATs file (``{'cfg', 'model'[, 'label_dict']}``) strictly, in eval
    mode; ``model.label_dict`` holds the label dict (None for pre-trained files)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"BEATs checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # objects other than tensors and plain containers: never loaded
        raise BEATsCheckpointError(f"{path}: holds objects that are not tensors or plain data (an official "
                                   "BEATs checkpoint holds only those), so it was not loaded: it may run code "
                                   "when unpickled. Get the file from its official source.") from e
    except Exception as e:  # truncated zip, text, ...
        raise BEATsCheckpointError(f"{path}: cannot be read as a torch checkpoint (truncated or corrupt "
                                   f"file?): {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    if not isinstance(ckpt, dict) or "cfg" not in ckpt or "model" not in ckpt:
        if isinstance(ckpt, dict):
            got = f"a dict with keys [{_names(map(str, ckpt.keys()), 4)}]"
            if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
                got += " (a bare state dict?)"
        else:
            got = f"a {type(ckpt).__name__}"
        raise BEATsCheckpointError(f"{path}: not a BEATs checkpoint: expected a dict with 'cfg' and "
                                   f"'model' (official format), got {got}")
    try:
        cfg = BEATsConfig.from_dict(ckpt["cfg"])
    except (ValueError, TypeError) as e:
        raise BEATsCheckpointError(f"{path}: bad BEATs cfg: {e}") from e
    state = ckpt["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BEATsCheckpointError(f"{path}: 'model' is not a state dict of tensors")
    with torch.device("meta"):  # shapes only: a cfg that claims billions of parameters allocates nothing
        expected = BEATs(cfg).state_dict()
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing tensor(s): {_names(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s): {_names(unexpected)}")
        if wrong:
            parts.append(f"{len(wrong)} tensor(s) with wrong shape: {_names(wrong, 3)}")
        raise BEATsCheckpointError(f"{path}: state dict does not match its cfg: " + "; ".join(parts))
    # load_state_dict would cast integer weights to float silently, and NaN weights give NaN everywhere
    cast = [f"{k} ({state[k].dtype})" for k, v in expected.items()
            if state[k].is_floating_point() != v.is_floating_point() or state[k].is_complex()]
    if cast:
        raise BEATsCheckpointError(f"{path}: {len(cast)} tensor(s) are not floating point, as BEATs' weights are: "
                                   f"{_names(cast, 3)}")
    broken = [k for k, v in state.items() if not torch.isfinite(v).all()]
    if broken:
        raise BEATsCheckpointError(f"{path}: {len(broken)} tensor(s) hold NaN or infinite values: {_names(broken, 3)}")
    model = BEATs(cfg)
    model.load_state_dict(state, strict=True)
    model.label_dict = ckpt.get("label_dict")
    return model.eval()


def save_beats_checkpoint(model: BEATs, path, label_dict: dict | None = None) -> Path:
    """Write ``model`` in the official format, atomically (temp file + os.replace). ``label_dict``
    defaults to ``model.label_dict``; it is written only when there is one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {"cfg": model.cfg.to_dict(),
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    label_dict = label_dict if label_dict is not None else getattr(model, "label_dict", None)
    if label_dict is not None:
        ckpt["label_dict"] = dict(label_dict)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
