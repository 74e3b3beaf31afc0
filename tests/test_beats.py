"""Tests of asc_lib.models.beats: the official BEATs file format, names and shapes, the forward pass
(patching, padding masks, SDPA vs explicit attention) and the checkpoint errors.

Most tests use a small config; the full released config is built on the meta device for its
parameter count and names, and once for real from a synthetic official-format checkpoint."""

import math

import pytest
import torch
from torch import nn

from asc_lib.kernels import applies as kernels_pinned
from asc_lib.models.beats import (BEATs, BEATsCheckpointError, BEATsConfig, Linear, load_beats_checkpoint,
                                  relative_position_bucket, released_config, save_beats_checkpoint)

@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on the shared 2-core machine, two threads waiting on each other made
    these small forwards up to 80x slower. Restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


SMALL = dict(input_patch_size=16, embed_dim=32, encoder_layers=2, encoder_embed_dim=48,
             encoder_ffn_embed_dim=64, encoder_attention_heads=4, conv_pos=16, conv_pos_groups=4,
             relative_position_embedding=True, num_buckets=32, max_distance=64, gru_rel_pos=True,
             deep_norm=True, encoder_layerdrop=0.5)
SMALL_FT = dict(SMALL, finetuned_model=True, predictor_class=5)


def official_shapes(c: dict) -> dict:
    """The state dict names and shapes of the official code for cfg ``c`` (BEATs.py / backbone.py)."""
    E, C, P = c["embed_dim"], c["encoder_embed_dim"], c["input_patch_size"]
    H, K, G = c["encoder_attention_heads"], c["conv_pos"], c["conv_pos_groups"]
    s = {"patch_embedding.weight": (E, 1, P, P), "layer_norm.weight": (E,), "layer_norm.bias": (E,),
         "post_extract_proj.weight": (C, E), "post_extract_proj.bias": (C,),
         "encoder.pos_conv.0.weight_g": (1, 1, K), "encoder.pos_conv.0.weight_v": (C, C // G, K),
         "encoder.pos_conv.0.bias": (C,), "encoder.layer_norm.weight": (C,), "encoder.layer_norm.bias": (C,)}
    for i in range(c["encoder_layers"]):
        p = f"encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            s[p + f"self_attn.{proj}.weight"], s[p + f"self_attn.{proj}.bias"] = (C, C), (C,)
        s[p + "self_attn.grep_linear.weight"], s[p + "self_attn.grep_linear.bias"] = (8, C // H), (8,)
        s[p + "self_attn.grep_a"] = (1, H, 1, 1)
        s[p + "self_attn.relative_attention_bias.weight"] = (c["num_buckets"], H)  # shared by all layers
        for ln in ("self_attn_layer_norm", "final_layer_norm"):
            s[p + f"{ln}.weight"], s[p + f"{ln}.bias"] = (C,), (C,)
        s[p + "fc1.weight"], s[p + "fc1.bias"] = (c["encoder_ffn_embed_dim"], C), (c["encoder_ffn_embed_dim"],)
        s[p + "fc2.weight"], s[p + "fc2.bias"] = (C, c["encoder_ffn_embed_dim"]), (C,)
    if c.get("finetuned_model"):
        s["predictor.weight"], s["predictor.bias"] = (c["predictor_class"], C), (c["predictor_class"],)
    return s


def synthetic_state(c: dict, seed: int = 0) -> dict:
    """Random weights under the official names, the relative bias table shared as the official saves it."""
    g = torch.Generator().manual_seed(seed)
    state, rel = {}, None
    for name, shape in official_shapes(c).items():
        if "relative_attention_bias" in name:
            rel = rel if rel is not None else torch.randn(shape, generator=g)
            state[name] = rel
        elif "norm.weight" in name or name.endswith("grep_a") or name.endswith("weight_g"):
            state[name] = 1.0 + 0.2 * torch.randn(shape, generator=g)
        elif len(shape) >= 2:  # weights: unit-variance outputs, so every non-linearity matters
            state[name] = torch.randn(shape, generator=g) / math.prod(shape[1:]) ** 0.5
        else:
            state[name] = 0.1 * torch.randn(shape, generator=g)
    return state


def full_cfg(finetuned=False) -> dict:
    return released_config(finetuned).to_dict()


def small_model(cfg=SMALL, seed=0) -> BEATs:
    torch.manual_seed(seed)
    m = BEATs(BEATsConfig.from_dict(dict(cfg)))
    m.load_state_dict(synthetic_state(m.cfg.to_dict(), seed), strict=True)
    return m.eval()


def waves(batch, seconds, seed=0):
    return 0.1 * torch.randn(batch, int(16000 * seconds), generator=torch.Generator().manual_seed(seed))


def ref_padding_mask(mask: torch.Tensor, steps: int) -> torch.Tensor:
    """The official rule, spelled out: ``steps`` consecutive chunks of ``len // steps`` entries (the
    remainder at the end dropped); a step is padding when its whole chunk is."""
    per = mask.size(1) // steps
    return torch.tensor([[bool(row[j * per:(j + 1) * per].all()) for j in range(steps)] for row in mask])


# ------------------------------------------------------------------------------ names and shapes

def test_released_config_has_the_official_parameter_count_names_and_shapes():
    for finetuned, n_tensors, n_params in ((False, 250, 90_311_792), (True, 252, 90_311_792 + 527 * 768 + 527)):
        with torch.device("meta"):
            m = BEATs(released_config(finetuned))
        shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
        assert len(shapes) == n_tensors
        assert shapes == official_shapes(full_cfg(finetuned))
        assert sum(p.numel() for p in m.parameters()) == n_params
    layers = m.encoder.layers  # one relative bias table, shared by all layers as in the official code
    assert all(l.self_attn.relative_attention_bias is layers[0].self_attn.relative_attention_bias for l in layers)


def test_config_accepts_the_official_keys_and_rejects_others():
    cfg = BEATsConfig.from_dict(full_cfg(True))
    assert cfg == released_config(True) and BEATsConfig.from_dict(cfg.to_dict()) == cfg
    assert BEATsConfig().input_patch_size == -1 and BEATsConfig().max_distance == 1280  # official defaults
    bad = [({"nonsense": 1}, "unknown BEATs cfg key.*nonsense"),
           ({"layer_norm_first": True}, "layer_norm_first"),
           ({"activation_fn": "glu"}, "activation_fn='glu'"),
           ({"input_patch_size": -1}, "input_patch_size=-1"),
           ({"encoder_layers": "12"}, "encoder_layers='12': expected int"),
           ({"deep_norm": 1}, "deep_norm=1: expected bool"),
           ({"encoder_attention_heads": 7}, "not divisible")]
    for change, msg in bad:
        with pytest.raises(ValueError, match=msg):
            BEATsConfig.from_dict({**full_cfg(), **change})
    with pytest.raises(ValueError, match="input_patch_size"):
        BEATs(BEATsConfig())  # the official default patch size (-1) is "unset"


def test_relative_position_buckets():
    rel = torch.tensor([0, -1, 1, -79, -80, 80, -799, 799, -5000, 5000])
    # 160 buckets per direction (keys after the query in the upper half), exact below 80, log up to 800
    expected = [0, 1, 161, 79, 80, 240, 159, 319, 159, 319]
    assert relative_position_bucket(rel, 320, 800).tolist() == expected
    b = relative_position_bucket(torch.arange(-1000, 1001), 320, 800)
    assert b.min() == 0 and b.max() == 319 and (b[:1000].diff() <= 0).all() and (b[1001:].diff() >= 0).all()


# ---------------------------------------------------------------------- the full released config

@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The full released cfg with random weights, saved by plain torch.save in the official format."""
    path = tmp_path_factory.mktemp("beats") / "BEATs_synthetic.pt"
    state = synthetic_state(full_cfg())
    torch.save({"cfg": full_cfg(), "model": state}, path)
    return load_beats_checkpoint(path), state


def test_full_official_format_checkpoint_loads_strictly(full):
    model, state = full
    assert not model.training and model.label_dict is None and model.predictor is None
    loaded = model.state_dict()
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], v) for k, v in state.items())


def test_full_model_one_and_ten_seconds(full):
    model, _ = full
    x = waves(2, 1.0)
    with torch.no_grad():
        y, pm = model.extract_features(x)
        y2, _ = model.extract_features(x)
        model.use_sdpa = False
        y3, _ = model.extract_features(x)
        model.use_sdpa = True
        y10, pm10 = model.extract_features(waves(1, 10.0, seed=1))
    assert y.shape == (2, 48, 768) and pm is None  # 98 frames -> 6 x 8 patches
    assert torch.equal(y, y2)  # eval mode is deterministic
    assert (y - y3).abs().max() <= 1e-5  # SDPA == explicit softmax
    assert y10.shape == (1, 496, 768) and pm10 is None and torch.isfinite(y10).all()  # 998 frames -> 62 x 8


# ------------------------------------------------------------------------------ checkpoints (small)

def test_small_official_format_checkpoints_load_and_keep_the_label_dict(tmp_path):
    labels = {i: f"/m/{i:03d}" for i in range(5)}
    for cfg, extra in ((SMALL, {}), (SMALL_FT, {"label_dict": labels})):
        state = synthetic_state(BEATsConfig.from_dict(dict(cfg)).to_dict(), seed=3)
        torch.save({"cfg": dict(cfg), "model": state, **extra}, tmp_path / "small.pt")
        m = load_beats_checkpoint(tmp_path / "small.pt")
        assert all(torch.equal(m.state_dict()[k], v) for k, v in state.items())
        assert m.label_dict == extra.get("label_dict")
    with torch.no_grad():
        probs, pm = m.extract_features(waves(3, 1.0))
    assert probs.shape == (3, 5) and pm is None and ((probs >= 0) & (probs <= 1)).all()


def test_save_load_round_trip_is_exact_and_atomic(tmp_path):
    labels = {i: f"/m/{i:03d}" for i in range(5)}
    x = waves(2, 1.5)
    for cfg in (SMALL, SMALL_FT):
        m = small_model(cfg, seed=4)
        path = save_beats_checkpoint(m, tmp_path / "out" / "beats.pt",
                                     label_dict=labels if cfg is SMALL_FT else None)
        raw = torch.load(path, weights_only=True)  # the official format
        assert set(raw) == ({"cfg", "model", "label_dict"} if cfg is SMALL_FT else {"cfg", "model"})
        assert raw["cfg"] == m.cfg.to_dict() and raw["model"].keys() == m.state_dict().keys()
        m2 = load_beats_checkpoint(path)
        with torch.no_grad():
            assert torch.equal(m.extract_features(x)[0], m2.extract_features(x)[0])
        assert m2.label_dict == (labels if cfg is SMALL_FT else None)
        assert [p.name for p in path.parent.iterdir()] == ["beats.pt"]  # no temp file left behind
    save_beats_checkpoint(m2, tmp_path / "again.pt")  # label_dict defaults to the model's
    assert load_beats_checkpoint(tmp_path / "again.pt").label_dict == labels


def test_bad_files_give_clear_errors(tmp_path):
    good = tmp_path / "good.pt"
    save_beats_checkpoint(small_model(), good)
    cases = {}
    torch.save(small_model().state_dict(), tmp_path / "bare.pt")
    cases["bare.pt"] = "not a BEATs checkpoint.*bare state dict"
    (tmp_path / "notes.txt").write_text("this is not a checkpoint\n")
    cases["notes.txt"] = "cannot be read as a torch checkpoint"
    data = good.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    cases["truncated.pt"] = "cannot be read as a torch checkpoint"
    torch.save([1, 2, 3], tmp_path / "list.pt")
    cases["list.pt"] = "not a BEATs checkpoint.*got a list"
    ckpt = torch.load(good, weights_only=True)
    torch.save({**ckpt, "cfg": {**ckpt["cfg"], "layer_norm_first": True}}, tmp_path / "prenorm.pt")
    cases["prenorm.pt"] = "bad BEATs cfg.*layer_norm_first"
    torch.save({**ckpt, "cfg": {**ckpt["cfg"], "bogus_key": 1}}, tmp_path / "unknown.pt")
    cases["unknown.pt"] = "bad BEATs cfg.*unknown BEATs cfg key.*bogus_key"
    state = dict(ckpt["model"])
    del state["encoder.layers.1.fc2.bias"], state["encoder.pos_conv.0.weight_g"]
    torch.save({**ckpt, "model": state}, tmp_path / "missing.pt")
    cases["missing.pt"] = "2 missing tensor.*encoder.layers.1.fc2.bias"
    torch.save({**ckpt, "model": {**ckpt["model"], "predictor.weight": torch.zeros(5, 48)}}, tmp_path / "extra.pt")
    cases["extra.pt"] = "1 unexpected tensor.*predictor.weight"
    torch.save({**ckpt, "model": {**ckpt["model"], "layer_norm.bias": torch.zeros(7)}}, tmp_path / "shape.pt")
    cases["shape.pt"] = r"wrong shape: layer_norm.bias \(7,\) \(expected \(32,\)\)"
    # a cfg that claims 4.8 G parameters (a 100,000-wide encoder) with the small model's tensors: refused on
    # shapes before any parameter is allocated
    torch.save({**ckpt, "cfg": {**ckpt["cfg"], "encoder_embed_dim": 100_000, "encoder_ffn_embed_dim": 400_000}},
               tmp_path / "huge.pt")
    cases["huge.pt"] = "state dict does not match its cfg.*wrong shape"
    import pickle
    (tmp_path / "code.pt").write_bytes(pickle.dumps(Exception("runs code when unpickled")))
    cases["code.pt"] = "not tensors or plain data.*was not loaded"
    for name, msg in cases.items():
        with pytest.raises(BEATsCheckpointError, match=msg) as e:
            load_beats_checkpoint(tmp_path / name)
        assert name in str(e.value)  # the message names the file
        assert "weights_only=False" not in str(e.value)  # never suggests loading what was refused
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        load_beats_checkpoint(tmp_path / "nowhere.pt")


# ---------------------------------------------------------------------------- forward (small)

def test_padding_mask_follows_the_official_rule():
    m = small_model()
    x = waves(2, 10.0)
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[0, int(0.7 * x.size(1)):] = True  # the last 30 % of clip 0 is padding
    with torch.no_grad():
        y, pm = m.extract_features(x, mask)
    frames = ref_padding_mask(mask, 998)  # 160 samples per frame
    assert frames[0].sum() == 298 and not frames[1].any()
    assert torch.equal(pm, ref_padding_mask(frames, 496))  # 2 frames per patch (time-major order not used)
    assert pm[0].sum() == 146 and pm[0, 350:].all() and not pm[0, :350].any() and not pm[1].any()
    # a step is padding only if all its entries are
    mask[0, 150000] = False  # one real sample in frame 937 = patch 468's second frame
    with torch.no_grad():
        _, pm2 = m.extract_features(x, mask)
    assert pm2[0].sum() == 145 and not pm2[0, 468]
    assert m.extract_features(x[:, :16000])[1] is None  # no mask in, none out


def test_padded_tokens_are_zeroed_and_never_attended():
    m = small_model()
    x = waves(2, 3.0, seed=2)
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[1, 30000:] = True
    with torch.no_grad():
        y, pm = m.extract_features(x, mask)
        noise = torch.randn(*pm.shape, 48) * pm.unsqueeze(-1)  # only at padded tokens
        h = m.post_extract_proj.register_forward_hook(lambda mod, inp, out: out + noise)
        y_noisy, _ = m.extract_features(x, mask)
        y_nomask, _ = m.extract_features(x)
        h.remove()
    assert pm[1].any() and torch.allclose(y, y_noisy, atol=1e-6)  # whatever is at padded tokens is ignored
    assert not torch.allclose(y[1], y_nomask[1], atol=1e-3)  # ... and without the mask it would count
    # attention alone: padded keys get no weight (same as cutting the sequence)
    attn = m.encoder.layers[0].self_attn
    xs = torch.randn(2, 10, 48)
    pb = m.encoder.position_bias(10)
    kpm = torch.zeros(2, 10, dtype=torch.bool)
    kpm[:, 7:] = True
    with torch.no_grad():
        for sdpa in (True, False):
            full = attn(xs, pb, kpm, use_sdpa=sdpa)[:, :7]
            cut = attn(xs[:, :7], pb[:, :7, :7], None, use_sdpa=sdpa)
            assert torch.allclose(full, cut, atol=1e-6)


@pytest.mark.parametrize("cfg", [SMALL, SMALL_FT], ids=["pretrained", "finetuned"])
def test_sdpa_equals_explicit_attention(cfg):
    m = small_model(cfg, seed=5)
    x = waves(2, 4.0, seed=5)
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[0, int(0.6 * x.size(1)):] = True
    for pad in (None, mask):
        with torch.no_grad():
            m.use_sdpa = True
            a, pa = m.extract_features(x, pad)
            m.use_sdpa = False
            b, pb = m.extract_features(x, pad)
        assert (a - b).abs().max() <= 1e-5
        assert (pa is None and pb is None) or torch.equal(pa, pb)


def test_finetuned_probabilities_average_the_unpadded_tokens():
    m = small_model(SMALL_FT, seed=6)
    x = waves(2, 2.0, seed=6)
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[0, 20000:] = True
    with torch.no_grad():
        probs, pm, hidden = m.extract_features(x, mask, return_layers=True)
        logits = m.predictor(hidden[-1])  # (B, T, K)
        keep = (~pm).unsqueeze(-1).float()
        expected = torch.sigmoid((logits * keep).sum(1) / keep.sum(1))
    assert probs.shape == (2, 5) and pm[0].any() and not pm[1].any()
    assert torch.allclose(probs, expected, atol=1e-6)


def test_return_layers_and_eval_determinism():
    m = small_model(seed=7)
    x = waves(2, 1.0, seed=7)
    with torch.no_grad():
        out = m.extract_features(x)
        y, pm, hidden = m.extract_features(x, return_layers=True)
        assert len(out) == 2 and torch.equal(out[0], y)  # the official return is unchanged
        assert len(hidden) == SMALL["encoder_layers"] + 1 and all(h.shape == (2, 48, 48) for h in hidden)
        assert torch.equal(hidden[-1], y)
        m.train()  # dropout 0.1 and layerdrop 0.5 act in training only
        torch.manual_seed(0)
        t1 = m.extract_features(x)[0]
        t2 = m.extract_features(x)[0]
        m.eval()
        assert not torch.equal(t1, t2) and torch.equal(m.extract_features(x)[0], y)


def test_bad_inputs_to_the_forward():
    m = small_model()
    with pytest.raises(ValueError, match="expected waveforms"):
        m.extract_features(torch.zeros(16000))
    with pytest.raises(ValueError, match="padding_mask shape"):
        m.extract_features(torch.zeros(2, 16000), torch.zeros(2, 8000, dtype=torch.bool))


def test_layerwise_gradient_decay_scales_the_gradient():
    cfg = dict(SMALL, layer_wise_gradient_decay_ratio=0.5, encoder_layerdrop=0.0, dropout=0.0,
               attention_dropout=0.0)
    m, ref = small_model(cfg), small_model(dict(cfg, layer_wise_gradient_decay_ratio=1.0))
    x = waves(1, 1.0)
    for model in (m, ref):
        model.train()
        model.extract_features(x)[0].sum().backward()
    g, g_ref = m.patch_embedding.weight.grad, ref.patch_embedding.weight.grad
    # two layers, each scales the gradient flowing below it by 0.5
    assert torch.allclose(g, g_ref * 0.25, rtol=1e-4, atol=1e-9) and math.isfinite(g.abs().sum().item())


def test_matches_reference_values_from_the_official_code():
    """Numbers computed once with the official code (microsoft/unilm beats/, unmodified) on the same
    small configs, synthetic weights and inputs; the full config was compared the same way (max abs
    difference about 1e-5 on 1 s and 10 s clips, with and without padding)."""
    m = small_model(SMALL, seed=8)
    x = waves(2, 2.0, seed=8)
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[0, 20000:] = True
    with torch.no_grad():
        y, _ = m.extract_features(x)
        ym, pm = m.extract_features(x, mask)
    assert y.shape == (2, 96, 48) and pm.sum() == 33
    ref = torch.tensor([[2.1651802, 1.7880634, 1.8523927, 1.8942728, 1.9258043],
                        [1.8470991, 1.7541107, 1.9147730, 2.0311606, 1.8043307]])
    ref_masked = torch.tensor([[2.1914732, 1.7808650, 1.8432394, 1.9272630, 1.9717178],
                               [1.8470991, 1.7541107, 1.9147730, 2.0311606, 1.8043307]])
    ref_token = torch.tensor([-0.7957457, 0.8620065, 1.7151976, -0.0482121, -1.9115218, -0.7239380])
    assert torch.allclose(y[:, :40:8].sum(-1), ref, atol=1e-5)
    assert torch.allclose(ym[:, :40:8].sum(-1), ref_masked, atol=1e-5)
    assert torch.allclose(y[1, 7, :6], ref_token, atol=1e-5)

    m = small_model(SMALL_FT, seed=9)
    x = waves(2, 2.0, seed=9)
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[0, 20000:] = True
    with torch.no_grad():
        p, _ = m.extract_features(x)
        pmask, _ = m.extract_features(x, mask)
    assert torch.allclose(p, torch.tensor([[0.7169902, 0.4030401, 0.3596418, 0.7017103, 0.4182422],
                                           [0.7147480, 0.3963022, 0.3558746, 0.7122754, 0.4055445]]), atol=1e-6)
    assert torch.allclose(pmask, torch.tensor([[0.7150933, 0.4072225, 0.3517847, 0.7124482, 0.4132852],
                                               [0.7147480, 0.3963022, 0.3558746, 0.7122754, 0.4055445]]), atol=1e-6)


def test_linear_on_onednn_is_nn_linear_in_value_gradients_and_state_dict():
    torch.manual_seed(0)
    lin = Linear(24, 40)
    ref = nn.Linear(24, 40)
    ref.load_state_dict(lin.state_dict())  # the same keys and shapes: checkpoints load either way
    x = torch.randn(3, 7, 24, requires_grad=True)
    xr = x.detach().clone().requires_grad_()
    y, yr = lin(x), ref(xr)
    assert y.shape == (3, 7, 40)
    torch.testing.assert_close(y, yr, rtol=1e-5, atol=1e-5)
    (y.square().sum()).backward()
    (yr.square().sum()).backward()
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(lin.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(lin.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-4)
    # where the kernels are pinned (x86-64, the tests' default), the product runs on oneDNN's conv
    if kernels_pinned():
        with torch.autograd.profiler.profile() as prof:
            lin(x)
        names = {e.name for e in prof.function_events}
        assert "aten::convolution" in names and "aten::addmm" not in names
