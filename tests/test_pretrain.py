"""Tests of asc_lib.pretrain: small-scale BEATs pre-training (masked patches, random-projection
tokenizer) and the supervised tagging stage, saved in the official checkpoint format."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from asc_lib.data.cache import waveform_cache
from asc_lib.data.synthetic import POOL_SOURCES, make_sound_pool
from asc_lib.models.beats import BEATs, load_beats_checkpoint, save_beats_checkpoint
from asc_lib.data.dataset import read_pool
from asc_lib.pretrain import (MaskedPatchModel, PreNormLayer, RandomProjectionTokenizer, SelfDistilledTokenizer, n_visible,
                              pool_fbank, pretrain, small_config, tag_finetune, teacher_tokens, tokenize_all,
                              train_tokenizer)
from asc_lib.repro import seed_everything

ROOT = Path(__file__).resolve().parent.parent


def tiny_cfg(**kw):
    """A very small encoder (2 layers of 64) so that tests run in seconds."""
    d = dict(encoder_layers=2, encoder_embed_dim=64, encoder_ffn_embed_dim=128, encoder_attention_heads=2,
             embed_dim=64)
    d.update(kw)
    return small_config(**d)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """48 clips of the synthetic sound pool: (root, files, tag names, targets, waves (N, 16000), fbank)."""
    root = make_sound_pool(tmp_path_factory.mktemp("pool") / "pool", 48, seed=0)
    files, names, targets = read_pool(root)
    waves = waveform_cache(files, 16000, root / "cache", source_sr=16000, progress=False)
    return root, files, names, targets, np.array(waves), pool_fbank(waves, progress=False)


# ------------------------------------------------------------------------------------- config

def test_small_config_validates_and_keeps_released_patching():
    cfg = small_config()
    cfg.validate()
    assert (cfg.input_patch_size, cfg.relative_position_embedding, cfg.deep_norm, cfg.gru_rel_pos) == (16, True, True, True)
    assert cfg.encoder_embed_dim % cfg.encoder_attention_heads == 0
    assert cfg.encoder_embed_dim % cfg.conv_pos_groups == 0
    assert small_config(encoder_layers=2).encoder_layers == 2
    with pytest.raises(ValueError, match="divisible"):
        small_config(encoder_attention_heads=5)


# ---------------------------------------------------------------------------------- tokenizer

def test_tokenizer_deterministic_from_seed_and_in_range():
    fb = torch.randn(3, 98, 128)
    a, b, c = RandomProjectionTokenizer(seed=1), RandomProjectionTokenizer(seed=1), RandomProjectionTokenizer(seed=2)
    assert list(a.parameters()) == []  # frozen: buffers only
    assert torch.equal(a.proj, b.proj) and torch.equal(a.codebook, b.codebook)
    assert not torch.equal(a.proj, c.proj)
    la = a(fb)
    assert la.shape == (3, 6 * 8) and la.dtype == torch.long
    assert torch.equal(la, b(fb))
    assert not torch.equal(la, c(fb))
    assert la.min() >= 0 and la.max() < a.codes
    small = RandomProjectionTokenizer(codes=7, seed=0)
    assert small(fb).max() < 7
    assert len(la.unique()) > 20  # random patches spread over many codes


def test_tokenizer_same_patch_same_label():
    tok = RandomProjectionTokenizer(seed=0)
    fb = torch.randn(2, 96, 128)
    patch = fb[0, 16:32, 48:64].clone()  # token (t=1, f=3) of clip 0
    fb[1, 64:80, 0:16] = patch  # token (t=4, f=0) of clip 1
    fb[0, 80:96, 112:128] = 3.0 * patch + 1.0  # same shape, other level and scale (token t=5, f=7)
    lab = tok(fb)
    assert lab[0, 1 * 8 + 3] == lab[1, 4 * 8 + 0] == lab[0, 5 * 8 + 7]


def test_tokenizer_patch_order_matches_model_patch_embedding():
    """With an identity patch embedding (embed_dim 256), the model's tokens are the raw patches."""
    model = BEATs(tiny_cfg(embed_dim=256))
    with torch.no_grad():
        model.patch_embedding.weight.copy_(torch.eye(256).view(256, 1, 16, 16))
    fb = torch.randn(2, 98, 128)  # 98 frames: the last 2 are dropped by the conv
    tokens = model.patch_embedding(fb.unsqueeze(1)).flatten(2).transpose(1, 2)  # (B, T, 256)
    patches = RandomProjectionTokenizer().patches(fb)
    assert patches.shape == tokens.shape == (2, 48, 256)
    torch.testing.assert_close(patches, tokens, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------ masked model

def test_mask_counts_and_encoder_sees_only_visible_tokens():
    model = MaskedPatchModel(BEATs(tiny_cfg()), RandomProjectionTokenizer(codes=32)).eval()
    seen = []
    model.beats.encoder.register_forward_hook(lambda mod, inp, out: seen.append(tuple(inp[0].shape)))
    fb = torch.randn(5, 96, 128)
    for ratio in (0.75, 0.5):
        g = torch.Generator().manual_seed(0)
        mask = MaskedPatchModel.sample_mask(5, 48, ratio, g)
        assert (mask.sum(1) == 48 - round(48 * (1 - ratio))).all()
        model(fb, torch.Generator().manual_seed(0), mask_ratio=ratio)
        assert seen[-1] == (5, round(48 * (1 - ratio)), 64)
    assert n_visible(48, 0.75) == 12
    m1 = MaskedPatchModel.sample_mask(4, 48, 0.75, torch.Generator().manual_seed(3))
    m2 = MaskedPatchModel.sample_mask(4, 48, 0.75, torch.Generator().manual_seed(3))
    assert torch.equal(m1, m2) and not torch.equal(m1[0], m1[1])  # per clip, from the generator


def test_only_masked_positions_enter_the_loss():
    torch.manual_seed(0)
    model = MaskedPatchModel(BEATs(tiny_cfg()), RandomProjectionTokenizer(codes=32)).eval()
    fb = torch.randn(2, 96, 128)
    labels = torch.randint(0, 32, (2, 48))
    mask = MaskedPatchModel.sample_mask(2, 48, 0.75, torch.Generator().manual_seed(1))
    with torch.no_grad():
        base = model(fb, labels=labels, mask=mask)[0]
        vis = (~mask[0]).nonzero()[0, 0]
        changed = labels.clone()
        changed[0, vis] = (labels[0, vis] + 1) % 32  # another target at a visible patch
        assert torch.equal(model(fb, labels=changed, mask=mask)[0], base)
        masked = mask[0].nonzero()[0, 0]
        changed = labels.clone()
        changed[0, masked] = (labels[0, masked] + 1) % 32  # another target at a masked patch
        assert not torch.equal(model(fb, labels=changed, mask=mask)[0], base)
        # the content of a masked patch does not reach the predictor (only its label does)
        fb2 = fb.clone()
        t, f = divmod(int(masked), 8)
        fb2[0, 16 * t:16 * t + 16, 16 * f:16 * f + 16] += 5.0
        torch.testing.assert_close(model(fb2, labels=labels, mask=mask)[0], base)


def test_pretraining_learns_beyond_frequent_code_and_is_deterministic(pool, tmp_path):
    fb = pool[5]
    g = seed_everything(0, 2)
    model = MaskedPatchModel(BEATs(tiny_cfg()), RandomProjectionTokenizer(seed=0))
    lines = []
    hist = pretrain(model, fb, epochs=60, batch_size=16, lr=2e-3, generator=g, log=lines.append,
                    progress=False)  # 180 steps
    assert len(hist) == 60 and len(lines) == 61 and "chance" in lines[-1]
    assert all(h["clips"] == 48 for h in hist)
    chance = hist[0]["chance"]
    labels = tokenize_all(model.tokenizer, fb)
    assert chance == pytest.approx(torch.bincount(labels.flatten()).max().item() / labels.numel())
    first = np.mean([h["loss"] for h in hist[:3]])
    last = np.mean([h["loss"] for h in hist[-3:]])
    acc = np.mean([h["acc"] for h in hist[-3:]])
    assert last < first - 0.5, (first, last)
    assert acc > chance + 0.05, (acc, chance)

    # deterministic: same seed, same threads -> the same history and weights
    def short(seed, rows=1):
        g = seed_everything(seed, 2)
        m = MaskedPatchModel(BEATs(tiny_cfg()), RandomProjectionTokenizer(seed=0))
        return pretrain(m, fb[:24], epochs=2, batch_size=8, lr=1e-3, generator=g, log=None,
                        progress=False, rows_per_epoch=rows), m
    (h1, m1), (h2, m2), (h3, _) = short(1), short(1), short(2)
    assert [(h["loss"], h["acc"]) for h in h1] == [(h["loss"], h["acc"]) for h in h2]
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    assert [h["loss"] for h in h1] != [h["loss"] for h in h3]
    # a row per step (3 steps an epoch) is a finer history of the very same run
    h4, m4 = short(1, rows=3)
    assert [h["epoch"] for h in h4] == [0.3333, 0.6667, 1.0, 1.3333, 1.6667, 2.0]
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m4.state_dict().values()))
    assert sum(h["clips"] for h in h4) == sum(h["clips"] for h in h1) == 48

    # the encoder, saved in the official format, round-trips
    path = save_beats_checkpoint(model.beats, tmp_path / "ssl.pt")
    ckpt = torch.load(path, weights_only=True)
    assert set(ckpt) == {"cfg", "model"} and ckpt["cfg"]["finetuned_model"] is False
    loaded = load_beats_checkpoint(path)
    model.beats.eval()
    wave = torch.from_numpy(pool[4][:3])
    with torch.no_grad():
        a, _ = model.beats.extract_features(wave)
        b, _ = loaded.extract_features(wave)
    assert a.shape == (3, 48, 64)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.slow
def test_self_distilled_tokenizer_learns_its_teacher_and_labels_for_the_next_iteration(pool):
    fb = pool[5]
    torch.manual_seed(0)
    teacher = BEATs(tiny_cfg())  # any encoder: the tokenizer learns codes that predict its outputs
    targets = teacher_tokens(teacher, fb, batch=16)
    assert targets.shape == (48, 48, 64)

    def trained(seed):
        g = seed_everything(seed, 2)
        tok = SelfDistilledTokenizer(teacher_dim=64, codes=64, code_dim=8, width=32)
        lines = []
        hist = train_tokenizer(tok, fb, targets, epochs=30, batch_size=16, lr=3e-3, generator=g, log=lines.append)
        return tok, hist, lines

    tok, hist, lines = trained(0)
    assert len(hist) == len(lines) == 30 and "cosine to the teacher" in lines[-1]
    assert hist[-1]["cosine"] > hist[0]["cosine"] + 0.1, (hist[0], hist[-1])  # it learns to rebuild the teacher
    assert 1 < hist[-1]["codes"] <= 64
    assert not any(p.requires_grad for p in tok.parameters()) and not tok.training  # frozen: it only labels
    torch.testing.assert_close(tok.codebook.norm(dim=-1), torch.ones(64))  # unit codes
    labels = tokenize_all(tok, fb)
    assert labels.shape == (48, 48) and int(labels.max()) < 64
    assert torch.equal(labels, (tok.encode(fb) @ tok.codebook.T).argmax(-1))  # the nearest code (cosine)
    assert torch.equal(labels, tokenize_all(trained(0)[0], fb))  # deterministic from its seed

    # the next iteration pre-trains on these labels, the tokenizer untouched
    model = MaskedPatchModel(BEATs(tiny_cfg()), tok)
    before = {k: v.clone() for k, v in tok.state_dict().items()}
    hist = pretrain(model, fb, epochs=2, batch_size=16, lr=1e-3, generator=seed_everything(0, 2), log=None,
                    progress=False)
    assert len(hist) == 2 and np.isfinite(hist[-1]["loss"])
    assert all(torch.equal(before[k], v) for k, v in tok.state_dict().items())


# ---------------------------------------------------------------------------------- SL stage

def test_tag_finetune_learns_tags_and_saves_a_finetuned_checkpoint(pool, tmp_path):
    root, files, names, targets, waves, fb = pool
    g = seed_everything(0, 2)
    beats = BEATs(tiny_cfg())
    copy = tag_finetune(beats, fb, targets, epochs=0, batch_size=16, lr=1e-3, generator=g, tag_names=names,
                        log=None, progress=False)
    src = beats.state_dict()
    assert all(torch.equal(v, src[k]) for k, v in copy.state_dict().items() if not k.startswith("predictor."))

    hist = []
    model = tag_finetune(beats, fb, targets, epochs=25, batch_size=16, lr=2e-3, generator=g, tag_names=names,
                         history=hist, log=None, progress=False)
    assert hist[-1]["loss"] < 0.8 * hist[0]["loss"], hist
    prior = targets.mean(0).clamp(1e-6, 1 - 1e-6)  # predicting each tag's frequency: the no-audio baseline
    base_rate = (-(prior * prior.log() + (1 - prior) * (1 - prior).log())).mean().item()
    assert hist[-1]["loss"] < base_rate - 0.05, (hist[-1], base_rate)  # learned from the audio
    K = len(names)
    assert model.cfg.finetuned_model is True and model.cfg.predictor_class == K
    assert model.predictor.weight.shape == (K, 64)
    path = save_beats_checkpoint(model, tmp_path / "ssl_sl.pt")
    loaded = load_beats_checkpoint(path)
    assert loaded.label_dict == {i: n for i, n in enumerate(names)}
    assert torch.load(path, weights_only=True)["cfg"]["predictor_class"] == K
    with torch.no_grad():
        probs, _ = loaded.extract_features(torch.from_numpy(waves[:4]))
        ref, _ = model.extract_features(torch.from_numpy(waves[:4]))
    assert probs.shape == (4, K) and probs.min() >= 0 and probs.max() <= 1
    torch.testing.assert_close(probs, ref, rtol=0, atol=0)
    with pytest.raises(ValueError, match="tag names"):
        tag_finetune(beats, fb, targets, epochs=0, batch_size=8, lr=1e-3, generator=g, tag_names=names[:-1])


# -------------------------------------------------------------------------------------- pool

def test_read_pool(pool, tmp_path):
    root, files, names, targets, _, fb = pool
    assert len(files) == 48 and all(f.is_file() and f.is_absolute() for f in files)
    assert set(names) <= set(POOL_SOURCES) and names == sorted(names)
    assert targets.shape == (48, len(names)) and set(targets.unique().tolist()) <= {0.0, 1.0}
    assert (targets.sum(1) >= 1).all()  # a scene-like mixture carries every source it mixes
    first = (root / "tags.csv").read_text().splitlines()[1].split("\t")
    assert files[0] == root / first[0]
    assert {names[k] for k in targets[0].nonzero().flatten().tolist()} == set(first[1].split(","))
    assert fb.shape == (48, 96, 128) and fb.dtype == torch.float32
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "tags.csv").write_text("file,tags\naudio/x.wav,rain\n")
    with pytest.raises(ValueError, match=r"bad[/\\]tags\.csv"):
        read_pool(bad)


# --------------------------------------------------------------------------------------- DDP

DDP_SCRIPT = """
import json, os, sys
sys.path.insert(0, {root!r})
import torch, torch.distributed as dist
from asc_lib.models.beats import BEATs
from asc_lib.pretrain import MaskedPatchModel, RandomProjectionTokenizer, pretrain, small_config
from asc_lib.repro import seed_everything
dist.init_process_group("gloo")
rank = dist.get_rank()
g = seed_everything(0, 1)
fb = torch.randn(20, 96, 128, generator=torch.Generator().manual_seed(5))
cfg = small_config(encoder_layers=1, encoder_embed_dim=32, encoder_ffn_embed_dim=64, encoder_attention_heads=2,
                   embed_dim=32)
model = MaskedPatchModel(BEATs(cfg), RandomProjectionTokenizer(codes=16), predictor_layers=1)
lines = []
hist = pretrain(model, fb, epochs=2, batch_size=8, lr=1e-3, generator=g, log=lines.append, progress=False)
flat = torch.cat([p.detach().flatten() for p in model.parameters()])
json.dump({{"hist": [(h["loss"], h["acc"], h["clips"]) for h in hist], "lines": lines, "sum": flat.double().sum().item(),
           "first": flat[:50].tolist()}}, open(os.path.join({out!r}, f"rank{{rank}}.json"), "w"))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_pretrain_under_torchrun_two_processes(tmp_path):
    import json
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(root=str(ROOT), out=str(tmp_path)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(script)], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["hist"] == r1["hist"]  # all-reduced statistics
    assert [h[2] for h in r0["hist"]] == [20, 20]  # each clip once per epoch: batches are sharded
    assert r0["first"] == r1["first"] and r0["sum"] == r1["sum"]  # DDP keeps the replicas equal
    assert len(r0["lines"]) == 3 and "2 processes" in r0["lines"][-1]
    assert r1["lines"] == []  # only rank 0 logs


def test_random_baseline_depends_on_its_seed_only():
    from asc_lib.checkpoints import random_small_beats

    a = random_small_beats(3).state_dict()
    torch.rand(1000)  # whatever else consumed random numbers before
    b = random_small_beats(3).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["patch_embedding.weight"], random_small_beats(4).state_dict()["patch_embedding.weight"])


def test_prenorm_layer_computes_torchs_pre_norm_encoder_layer():
    """PreNormLayer (oneDNN Linear when pinned) is nn.TransformerEncoderLayer(norm_first, gelu, 2x width)
    given the same weights, in value and in input gradient."""
    torch.manual_seed(0)
    ref = torch.nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
    layer = PreNormLayer(32, 4)
    assert torch.count_nonzero(layer.qkv.bias) == 0 and torch.count_nonzero(layer.out.bias) == 0
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))  # non-zero biases, norms off 1 and 0
        ref.self_attn.in_proj_weight.copy_(layer.qkv.weight)
        ref.self_attn.in_proj_bias.copy_(layer.qkv.bias)
        for mine, theirs in ((layer.out, ref.self_attn.out_proj), (layer.fc1, ref.linear1),
                             (layer.fc2, ref.linear2), (layer.norm1, ref.norm1), (layer.norm2, ref.norm2)):
            theirs.weight.copy_(mine.weight)
            theirs.bias.copy_(mine.bias)
    x = torch.randn(3, 7, 32, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    y, y_ref = layer(x), ref(x_ref)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    y.square().sum().backward()
    y_ref.square().sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-4)
