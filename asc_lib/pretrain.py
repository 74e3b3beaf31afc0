"""BEATs pre-training at small scale: the "SSL" and "SSL+SL" teachers, built from scratch on the pool.

BEATs (Chen et al., ICML 2023) pre-trains with masked audio modelling: 75 % of the 16x16 fbank
patches are masked, the encoder sees only the visible ones, and a small predictor, given the encoder
outputs at their positions and zeros (plus a position embedding) at the masked ones, predicts the
*tokenizer label* of each masked patch (cross-entropy on the masked positions only). Iteration 1
uses a frozen random-projection tokenizer (as BEST-RQ): a random linear map of each raw patch and a
random codebook; the label is the nearest code of the l2-normalised vectors. Iteration 2 (and every
later one) distils a tokenizer from the encoder just pre-trained (:class:`SelfDistilledTokenizer`:
codes from which a small estimator must rebuild that encoder's outputs) and pre-trains a new encoder
on its labels.

The "SL" stage then fine-tunes the pre-trained encoder on the pool's event tags (multi-label BCE,
a Linear head on the mean over tokens: BEATs' own fine-tuned forward), the analogue of AudioSet
fine-tuning. Both results are written with :func:`asc_lib.models.beats.save_beats_checkpoint` in
the official format.

Shapes: N clips, B batch, F fbank frames (98 for 1 s; the conv uses the first 96), T patch tokens
(F/16 * 8 = 48 for 1 s, time-major: token ``t * 8 + f``), V visible tokens, C encoder channels,
K tags.

Under ``torchrun`` (``torch.distributed`` initialised) :func:`pretrain` wraps the model in
DistributedDataParallel, shards every batch by rank and all-reduces the logged statistics.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from asc_lib.features import beats_fbank
from asc_lib.models.beats import BEATs, BEATsConfig, Linear, released_config

__all__ = ["small_config", "RandomProjectionTokenizer", "SelfDistilledTokenizer", "MaskedPatchModel", "pretrain",
           "tag_finetune", "teacher_tokens", "train_tokenizer", "pool_fbank", "tokenize_all", "fbank_patches",
           "PATCH"]

PATCH = 16  # patch size (time and frequency), as the released models


# ---------------------------------------------------------------------------------------- config

def small_config(**overrides) -> BEATsConfig:
    """A BEATs architecture small enough for CPU pre-training, with the released models' patching,
    preprocessing, post-LN deep norm and gated relative position bias: 4 layers of 192 channels,
    4 heads, FFN 768, patch embedding 128, positional conv kernel 16 in 16 groups. Dropouts and
    layerdrop are off (tiny data, few steps); the gradient decay ratio is 1 (training from scratch).
    ``overrides`` replace any field; the result is validated."""
    d = released_config().to_dict()
    d.update(embed_dim=128, encoder_layers=4, encoder_embed_dim=192, encoder_ffn_embed_dim=768,
             encoder_attention_heads=4, layer_wise_gradient_decay_ratio=1.0, dropout=0.0,
             attention_dropout=0.0, activation_dropout=0.0, encoder_layerdrop=0.0, dropout_input=0.0,
             conv_pos=16, conv_pos_groups=16, predictor_dropout=0.0)
    d.update(overrides)
    return BEATsConfig.from_dict(d)  # validates


# ------------------------------------------------------------------------------------- tokenizer

def fbank_patches(fbank: torch.Tensor, patch: int = PATCH) -> torch.Tensor:
    """(B, F, 128) -> raw patches (B, T, patch*patch), in the model's token order (time-major,
    token ``t * (128 // patch) + f``) and each patch flattened as the conv kernel (time row, then
    frequency column). Frames beyond a multiple of ``patch`` are dropped, as the conv does."""
    B, n_frames, n_mel = fbank.shape
    Ft, Ff = n_frames // patch, n_mel // patch
    x = fbank[:, :Ft * patch, :Ff * patch].reshape(B, Ft, patch, Ff, patch)  # (B, Ft, i, Ff, j)
    return x.permute(0, 1, 3, 2, 4).reshape(B, Ft * Ff, patch * patch)  # (B, T, 256)


class PreNormLayer(nn.Module):
    """A pre-norm Transformer layer: ``nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0,
    activation="gelu", batch_first=True, norm_first=True)`` with its initialisation, whose products run
    on :class:`~asc_lib.models.beats.Linear` (oneDNN when the kernels are pinned: torch's layer calls
    MKL's pinned sgemm, which made a pre-training step 1.9x slower than unpinned)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.out = Linear(width, 3 * width), Linear(width, width)
        self.fc1, self.fc2 = Linear(width, 2 * width), Linear(2 * width, width)
        nn.init.xavier_uniform_(self.qkv.weight)  # as nn.MultiheadAttention
        nn.init.zeros_(self.qkv.bias)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C)
        B, T, C = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)  # (B, heads, T, C / heads)
        x = x + self.out(a.transpose(1, 2).reshape(B, T, C))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class RandomProjectionTokenizer(nn.Module):
    """Frozen BEATs iter-1 / BEST-RQ tokenizer: label = nearest code, in cosine terms, of a random
    projection of the patch. Each patch is centred (its own mean removed) before the projection, so
    that the overall level does not pick the code. Buffers only (no parameters), drawn from ``seed``.
    """

    def __init__(self, codes: int = 1024, code_dim: int = 16, patch: int = PATCH, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        d = patch * patch
        proj = torch.randn(d, code_dim, generator=g) * math.sqrt(2.0 / (d + code_dim))  # Xavier normal
        codebook = F.normalize(torch.randn(codes, code_dim, generator=g), dim=-1)
        self.register_buffer("proj", proj)  # (256, D)
        self.register_buffer("codebook", codebook)  # (codes, D), unit rows
        self.patch, self.codes = patch, codes

    def patches(self, fbank: torch.Tensor) -> torch.Tensor:
        """(B, F, 128) -> (B, T, 256), token order as the model."""
        return fbank_patches(fbank, self.patch)

    @torch.no_grad()
    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        """(B, F, 128) -> labels (B, T) long in [0, codes)."""
        p = self.patches(fbank.float())
        p = p - p.mean(-1, keepdim=True)  # (B, T, 256)
        z = F.normalize(p @ self.proj, dim=-1)  # (B, T, D)
        return (z @ self.codebook.T).argmax(-1)  # nearest unit code = largest cosine


class SelfDistilledTokenizer(nn.Module):
    """BEATs' tokenizer of iteration 2 and later, small: it learns codes that carry what a pre-trained
    encoder (the *teacher*, the acoustic model of the previous iteration) knows about each patch.

    A Transformer encodes the patches (as the official ``Tokenizers``: patch embedding, Transformer,
    then Linear-Tanh-Linear to the code space); each l2-normalised output is replaced by its nearest
    unit code (cosine), and a second Transformer, the *estimator*, must rebuild the teacher's last-layer
    output of every patch from the codes alone. So the codes keep only what predicts the teacher. The
    codebook follows the vectors assigned to it by an exponential moving average (decay 0.99, as
    BEATs' ``NormEMAVectorQuantizer``); it starts from random encoder outputs of the first batch, and
    a code no batch has used for a while restarts at a random output (our substitute for k-means
    initialisation). Only :meth:`forward`, the labels, is used once it is trained; it needs no teacher.
    """

    def __init__(self, teacher_dim: int, codes: int = 1024, code_dim: int = 32, width: int = 96,
                 layers: int = 1, heads: int = 4, patch: int = PATCH, max_tokens: int = 512,
                 decay: float = 0.99):
        super().__init__()
        self.patch, self.codes, self.decay = patch, codes, decay

        def transformer():
            return nn.Sequential(*(PreNormLayer(width, heads) for _ in range(layers)))

        self.embed = nn.Linear(patch * patch, width)  # a patch-sized stride-patch conv, on flat patches
        self.pos = nn.Parameter(torch.randn(max_tokens, width) * 0.02)
        self.encoder = transformer()
        self.quantize_layer = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, code_dim))
        self.estimator_in = nn.Linear(code_dim, width)
        self.estimator = transformer()
        self.estimator_out = nn.Linear(width, teacher_dim)
        self.register_buffer("codebook", torch.zeros(codes, code_dim))  # unit rows once started
        self.register_buffer("usage", torch.zeros(codes))  # moving average of each code's share
        self.register_buffer("code_sum", torch.zeros(codes, code_dim))  # moving average of assigned vectors

    def encode(self, fbank: torch.Tensor) -> torch.Tensor:
        """(B, F, 128) -> unit vectors z (B, T, D) in the code space."""
        x = self.embed(fbank_patches(fbank.float(), self.patch))  # (B, T, width)
        h = self.encoder(x + self.pos[:x.shape[1]])
        return F.normalize(self.quantize_layer(h), dim=-1)

    @torch.no_grad()
    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        """(B, F, 128) -> labels (B, T) long in [0, codes): the nearest code of each patch."""
        return (self.encode(fbank) @ self.codebook.T).argmax(-1)

    def loss(self, fbank: torch.Tensor, target: torch.Tensor, generator: torch.Generator):
        """fbank (B, F, 128) and the teacher's last-layer outputs ``target`` (B, T, C) -> (loss, cosine
        similarity of the estimate to the teacher (mean), codes used in the batch). In training mode the
        codebook moves towards the vectors assigned to it (``generator`` draws the restarts)."""
        z = self.encode(fbank)  # (B, T, D)
        flat = z.detach().reshape(-1, z.shape[-1])  # (B T, D)
        if self.training and not self.usage.any():  # first batch: codes start at random outputs
            self.codebook.copy_(flat[torch.randint(len(flat), (self.codes,), generator=generator)])
        k = (z.detach() @ self.codebook.T).argmax(-1)  # (B, T) nearest unit code
        q = self.codebook[k]  # (B, T, D)
        commit = (z - q).pow(2).sum(-1).mean()  # pulls the encoder's outputs to their codes
        q = z + (q - z).detach()  # straight-through: the estimator's gradient reaches the encoder
        est = self.estimator_out(self.estimator(self.estimator_in(q) + self.pos[:q.shape[1]]))
        cos = F.cosine_similarity(est, target, dim=-1).mean()
        if self.training:
            with torch.no_grad():
                onehot = F.one_hot(k.reshape(-1), self.codes).to(flat.dtype)  # (B T, codes)
                self.usage.mul_(self.decay).add_(onehot.mean(0), alpha=1 - self.decay)
                self.code_sum.mul_(self.decay).add_(onehot.T @ flat, alpha=1 - self.decay)
                used = self.code_sum.norm(dim=-1) > 0
                self.codebook[used] = F.normalize(self.code_sum[used], dim=-1)
                dead = self.usage < 0.01 / self.codes  # used by under 1 % of its fair share, lately
                if dead.any():
                    pick = torch.randint(len(flat), (int(dead.sum()),), generator=generator)
                    self.codebook[dead], self.code_sum[dead] = flat[pick], 0.0
                    self.usage[dead] = 1.0 / self.codes
        return (1 - cos) + commit, cos.detach(), int(k.unique().numel())


@torch.no_grad()
def teacher_tokens(beats: BEATs, fbank: torch.Tensor, batch: int = 128, device="cpu") -> torch.Tensor:
    """Last-layer outputs (N, T, C) of the encoder ``beats`` on every clip, unmasked: the targets
    the next iteration's tokenizer distils."""
    beats.to(device).eval()
    return torch.cat([beats.forward_fbank(fbank[i:i + batch].to(device, torch.float32))[0].cpu()
                      for i in range(0, len(fbank), batch)])


def train_tokenizer(tokenizer: SelfDistilledTokenizer, fbank: torch.Tensor, targets: torch.Tensor, *,
                    epochs: int, batch_size: int, lr: float, generator: torch.Generator, device="cpu",
                    log=print) -> list[dict]:
    """Train ``tokenizer`` to distil ``targets`` (N, T, C) from fbanks (N, F, 128), in place: Adam,
    cosine decay, batches shuffled by ``generator``. Returns one dict per epoch: epoch, cosine (mean
    similarity of the estimate to the teacher), codes (codes used in the last epoch's labels)."""
    device = torch.device(device)
    tokenizer.to(device).train()
    opt = torch.optim.Adam([p for p in tokenizer.parameters()], lr=lr)
    N = len(fbank)
    total = epochs * math.ceil(N / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, total, max(1, total // 20)))
    history = []
    for epoch in range(epochs):
        perm = torch.randperm(N, generator=generator)
        cos_sum, seen = 0.0, 0
        for i in range(0, N, batch_size):
            idx = perm[i:i + batch_size]
            loss, cos, _ = tokenizer.loss(fbank[idx].to(device), targets[idx].to(device), generator)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            cos_sum, seen = cos_sum + cos.item() * len(idx), seen + len(idx)
        tokenizer.eval()
        codes = int(tokenize_all(tokenizer, fbank).unique().numel())
        tokenizer.train()
        history.append({"epoch": epoch + 1, "cosine": cos_sum / seen, "codes": codes})
        if log is not None:
            log(f"tokenizer epoch {epoch + 1}/{epochs}: cosine to the teacher {cos_sum / seen:.3f}, "
                f"{codes} codes in use")
    tokenizer.requires_grad_(False).eval()  # frozen from now on: it only labels
    return history


# ------------------------------------------------------------------------------- masked model

def n_visible(T: int, mask_ratio: float) -> int:
    """Visible tokens per clip: round(T (1 - ratio)), kept in [1, T - 1]."""
    return min(max(round(T * (1.0 - mask_ratio)), 1), T - 1)


class MaskedPatchModel(nn.Module):
    """A BEATs encoder with the pre-training head: predictor (a small Transformer with a learned
    position embedding) and a Linear to the tokenizer's codes.

    The encoder runs on the visible tokens only (gathered in their time order); its outputs are put
    back at their positions of a zero (B, T, C) sequence, the position embedding is added, and the
    predictor's outputs at the masked positions are classified. The encoder's own position
    information (conv embedding, relative bias) acts on the compacted visible sequence, as it would
    on a shorter clip; the predictor's position embedding carries the true positions."""

    def __init__(self, beats: BEATs, tokenizer: nn.Module | None = None, *,
                 predictor_layers: int = 2, predictor_heads: int = 4, max_tokens: int = 512):
        super().__init__()
        C = beats.cfg.encoder_embed_dim
        self.beats = beats
        self.tokenizer = tokenizer if tokenizer is not None else RandomProjectionTokenizer()
        self.pos = nn.Parameter(torch.randn(max_tokens, C) * 0.02)  # (max_tokens, C)
        self.predictor = nn.Sequential(*(PreNormLayer(C, predictor_heads) for _ in range(predictor_layers)))
        self.norm = nn.LayerNorm(C)
        self.head = Linear(C, self.tokenizer.codes)

    @staticmethod
    def sample_mask(B: int, T: int, mask_ratio: float, generator: torch.Generator | None) -> torch.Tensor:
        """Bool (B, T), True = masked: T - round(T (1 - ratio)) random tokens per clip."""
        order = torch.rand(B, T, generator=generator).argsort(dim=1)  # (B, T) random permutation
        mask = torch.zeros(B, T, dtype=torch.bool)
        mask.scatter_(1, order[:, :T - n_visible(T, mask_ratio)], True)
        return mask

    def embed(self, fbank: torch.Tensor) -> torch.Tensor:
        """(B, F, 128) -> projected patch tokens (B, T, C), as :meth:`BEATs.forward_fbank` before the
        encoder."""
        m = self.beats
        x = m.patch_embedding(fbank.unsqueeze(1).to(m.patch_embedding.weight.dtype))  # (B, E, F/16, 8)
        x = m.layer_norm(x.flatten(2).transpose(1, 2))  # (B, T, E) time-major
        if m.post_extract_proj is not None:
            x = m.post_extract_proj(x)  # (B, T, C)
        return F.dropout(x, m.cfg.dropout_input, self.training)

    def masked_loss(self, fbank: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor):
        """fbank (B, F, 128), labels (B, T), mask (B, T) bool with the same count per row ->
        (mean cross-entropy over the masked tokens, their accuracy (float tensor), logits (M, codes))."""
        x = self.embed(fbank)  # (B, T, C)
        B, T, C = x.shape
        mask = mask.to(x.device)
        V = int((~mask[0]).sum())
        vis = (~mask).nonzero()[:, 1].view(B, V)  # (B, V) visible indices, increasing
        enc, _ = self.beats.encoder(x.gather(1, vis.unsqueeze(-1).expand(B, V, C)), None,
                                    self.beats.use_sdpa)  # (B, V, C)
        full = x.new_zeros(B, T, C).scatter(1, vis.unsqueeze(-1).expand(B, V, C), enc)  # zeros at masked
        h = self.norm(self.predictor(full + self.pos[:T]))  # (B, T, C)
        logits = self.head(h[mask])  # (M, codes), M = B (T - V)
        target = labels.to(x.device)[mask]  # (M,)
        loss = F.cross_entropy(logits.float(), target)
        acc = (logits.argmax(-1) == target).float().mean()
        return loss, acc, logits

    def forward(self, fbank: torch.Tensor, generator: torch.Generator | None = None,
                mask_ratio: float = 0.75, labels: torch.Tensor | None = None,
                mask: torch.Tensor | None = None):
        """(B, F, 128) -> (loss, masked accuracy). The mask is drawn from ``generator`` (CPU) unless
        ``mask`` (B, T) is given; ``labels`` (B, T) default to the tokenizer's."""
        if labels is None:
            labels = self.tokenizer(fbank)
        if mask is None:
            mask = self.sample_mask(fbank.shape[0], labels.shape[1], mask_ratio, generator)
        loss, acc, _ = self.masked_loss(fbank, labels, mask)
        return loss, acc


# ------------------------------------------------------------------------------------ training

def _dist() -> tuple[int, int]:
    """(rank, world size); (0, 1) without torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _schedule(step: int, total: int, warmup: int) -> float:
    """LR factor: linear warm-up, then cosine to 0."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


@torch.no_grad()
def tokenize_all(tokenizer: nn.Module, fbank: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """Labels (N, T) of every clip (the tokenizer is frozen: computed once)."""
    dev = tokenizer.codebook.device
    return torch.cat([tokenizer(fbank[i:i + batch].to(dev, torch.float32)).cpu()
                      for i in range(0, len(fbank), batch)])


def pretrain(model: MaskedPatchModel, fbank_tensor: torch.Tensor, *, epochs: int, batch_size: int,
             lr: float, mask_ratio: float = 0.75, generator: torch.Generator, device="cpu",
             weight_decay: float = 0.01, warmup_fraction: float = 0.05, log=print,
             progress: bool = True, rows_per_epoch: int = 1) -> list[dict]:
    """Masked-patch pre-training of ``model`` on normalised fbanks (N, F, 128), in place.

    AdamW, linear warm-up then cosine decay, batches shuffled each epoch. Deterministic for a given
    ``generator`` state and thread count (use :func:`asc_lib.repro.seed_everything`). Under
    ``torchrun`` the model is wrapped in DistributedDataParallel, every batch is split by rank and
    the statistics are all-reduced (every rank must pass the same data and generator seed).

    Returns ``rows_per_epoch`` dicts per epoch (a curve even for one pass over a large pool): epoch (passes
    so far, fractional within an epoch), loss, acc (masked accuracy), chance (accuracy of always
    predicting the most frequent code: the honest chance level), clips (seen since the previous row, all
    ranks), seconds (since the start). Logs one line per row and a summary (rank 0 only).
    """
    device = torch.device(device)
    rank, world = _dist()
    N = len(fbank_tensor)
    if N < world:
        raise ValueError(f"pretrain: {N} clips for {world} processes")
    model.to(device).train()
    labels = tokenize_all(model.tokenizer, fbank_tensor)  # (N, T) on the CPU
    chance = torch.bincount(labels.flatten(), minlength=model.tokenizer.codes).max().item() / labels.numel()
    # one seed drawn before anything rank-dependent: the shuffling is shared by all ranks, the
    # masks differ by rank (each rank masks different clips)
    seed = int(torch.randint(2 ** 62, (1,), generator=generator))
    order_gen = torch.Generator().manual_seed(seed)
    mask_gen = torch.Generator().manual_seed(seed + 1 + rank)
    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, fused=True,
                            weight_decay=weight_decay)
    steps_per_epoch = math.ceil(N / batch_size)
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: _schedule(s, total, max(1, round(warmup_fraction * total))))
    history, t0 = [], time.perf_counter()
    every = math.ceil(steps_per_epoch / max(1, rows_per_epoch))  # steps between two rows of the history
    for epoch in tqdm(range(epochs), desc="pre-training", unit="epoch", disable=not progress or rank != 0):
        perm = torch.randperm(N, generator=order_gen)
        stats = torch.zeros(4, dtype=torch.float64)  # sum of loss * masked, correct, masked tokens, clips
        for step, i in enumerate(range(0, N, batch_size)):
            batch = perm[i:i + batch_size]
            if len(batch) < world:  # a last batch too small to split: skipped by every rank
                sched.step()
            else:
                idx = batch[rank::world]  # this rank's share
                x = fbank_tensor[idx].to(device, torch.float32)  # (b, F, 128)
                mask = MaskedPatchModel.sample_mask(len(idx), labels.shape[1], mask_ratio, mask_gen)
                loss, acc = net(x, labels=labels[idx], mask=mask)  # through DDP: gradients synchronised
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                m = int(mask.sum())
                stats += torch.tensor([loss.item() * m, acc.item() * m, m, len(idx)], dtype=torch.float64)
            if (step + 1) % every and step + 1 < steps_per_epoch:
                continue
            if world > 1:  # on the model's device: NCCL reduces only CUDA tensors
                stats_dev = stats.to(device)
                dist.all_reduce(stats_dev)
                stats = stats_dev.cpu()
            at = epoch + (step + 1) / steps_per_epoch
            row = {"epoch": round(at, 4), "loss": stats[0].item() / stats[2].item(),
                   "acc": stats[1].item() / stats[2].item(), "chance": chance, "clips": int(stats[3]),
                   "seconds": time.perf_counter() - t0}
            history.append(row)
            stats = torch.zeros(4, dtype=torch.float64)
            if rank == 0 and log is not None:
                log(f"epoch {at:g}/{epochs}: masked-patch loss {row['loss']:.3f}, masked accuracy "
                    f"{row['acc']:.3f} (chance: most frequent code {chance:.3f})")
    if rank == 0 and log is not None and history:
        a, b = history[0], history[-1]
        log(f"pre-training: {epochs} epochs x {N} clips in {b['seconds']:.0f} s on {device}"
            f"{f' x {world} processes' if world > 1 else ''}; loss {a['loss']:.3f} -> {b['loss']:.3f}, "
            f"masked accuracy {a['acc']:.3f} -> {b['acc']:.3f} (chance {chance:.3f})")
    model.eval()
    return history


# ------------------------------------------------------------------------------------ SL stage

def tag_finetune(beats: BEATs, fbank: torch.Tensor, targets: torch.Tensor, *, epochs: int, batch_size: int,
                 lr: float, generator: torch.Generator, device="cpu", tag_names: list[str] | None = None,
                 weight_decay: float = 0.01, history: list | None = None, log=print,
                 progress: bool = True, rows_per_epoch: int = 1) -> BEATs:
    """The SL stage: multi-label tagging of fbanks (N, F, 128) with ``targets`` (N, K) in {0, 1}.

    Builds a fresh BEATs with ``finetuned_model=True, predictor_class=K``, copies every weight of
    ``beats`` into it (checked: the merged state dict loads strictly), and trains all of it with
    BCE on BEATs' own fine-tuned output (sigmoid of the token-mean logits), AdamW with cosine decay.
    ``label_dict`` is index -> tag name (``tag_names``, default ``tag{k}``). Appends ``rows_per_epoch``
    ``{epoch, loss}`` per epoch to ``history`` if given (epoch: passes so far). Returns the model in eval
    mode, on the CPU.
    """
    device = torch.device(device)
    N, K = targets.shape
    if len(fbank) != N:
        raise ValueError(f"tag_finetune: {len(fbank)} fbanks but {N} target rows")
    cfg = BEATsConfig.from_dict({**beats.cfg.to_dict(), "finetuned_model": True, "predictor_class": K})
    model = BEATs(cfg, use_sdpa=beats.use_sdpa)
    state = model.state_dict()
    src = beats.state_dict()
    extra = sorted(set(src) - set(state))
    if extra:
        raise ValueError(f"tag_finetune: the source model has tensors the fine-tuned one lacks: {extra[:5]}")
    state.update({k: v for k, v in src.items() if not k.startswith("predictor.")})
    model.load_state_dict(state, strict=True)
    names = list(tag_names) if tag_names is not None else [f"tag{k}" for k in range(K)]
    if len(names) != K:
        raise ValueError(f"tag_finetune: {len(names)} tag names for {K} target columns")
    model.label_dict = {i: n for i, n in enumerate(names)}

    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=True)  # see train.py
    total = epochs * math.ceil(N / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, total, max(1, total // 20)))
    targets = targets.float()
    steps = math.ceil(N / batch_size)
    every = math.ceil(steps / max(1, rows_per_epoch))
    for epoch in tqdm(range(epochs), desc="tag fine-tuning", unit="epoch", disable=not progress):
        perm = torch.randperm(N, generator=generator)
        run, seen = 0.0, 0
        for step, i in enumerate(range(0, N, batch_size)):
            idx = perm[i:i + batch_size]
            probs, _ = model.forward_fbank(fbank[idx].to(device, torch.float32))  # (b, K)
            loss = F.binary_cross_entropy(probs.float(), targets[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            run, seen = run + loss.item() * len(idx), seen + len(idx)
            if (step + 1) % every and step + 1 < steps:
                continue
            at = round(epoch + (step + 1) / steps, 4)
            if history is not None:
                history.append({"epoch": at, "loss": run / seen})
            if log is not None:
                log(f"tag epoch {at:g}/{epochs}: BCE {run / seen:.4f}")
            run, seen = 0.0, 0
    return model.cpu().eval()


# ---------------------------------------------------------------------------------------- data

@torch.no_grad()
def pool_fbank(waves, batch: int = 128, progress: bool = True) -> torch.Tensor:
    """16 kHz waveforms (N, samples) (array or memmap) -> normalised fbanks (N, F', 128), cut to
    whole patches (F' = 16 * (F // 16): 96 frames for 1 s), float32."""
    out = []
    for i in tqdm(range(0, len(waves), batch), desc="fbank", unit="batch", disable=not progress):
        fb = beats_fbank(torch.from_numpy(np.array(waves[i:i + batch], dtype=np.float32)))
        out.append(fb[:, :fb.shape[1] // PATCH * PATCH])
    return torch.cat(out)
