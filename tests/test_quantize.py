"""INT8 post-training static quantisation (asc_lib.quantize, PT2E): real INT8 kernels, accuracy, size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from asc_lib import quantize as Q


class ResNorm(nn.Module):
    """Frequency-wise normalisation + 0.1 x residual (no parameters), as in TF-SepNet."""

    def forward(self, x):
        mean = x.mean((1, 3), keepdim=True)
        var = x.var((1, 3), keepdim=True)
        return 0.1 * x + (x - mean) / torch.sqrt(var + 1e-5)


def cbr(c_in, c_out, k=1, s=1, p=0, g=1):
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, s, p, groups=g, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class Block(nn.Module):
    """Transition, channel shuffle, chunk, depthwise freq/time convs, means, residual adds, cat."""

    def __init__(self, c_in, c_out):
        super().__init__()
        h = c_out // 2
        self.trans = cbr(c_in, c_out) if c_in != c_out else None
        self.f_dw, self.f_pw = cbr(h, h, (3, 1), p=(1, 0), g=h), cbr(h, h)
        self.t_dw, self.t_pw = cbr(h, h, (1, 3), p=(0, 1), g=h), cbr(h, h)
        self.drop = nn.Dropout(0.1)

    def forward(self, x):
        if self.trans is not None:
            x = self.trans(x)
        b, c, f, t = x.shape
        x = x.reshape(b, 2, c // 2, f, t).transpose(1, 2).reshape(b, c, f, t)
        x1, x2 = torch.chunk(x, 2, dim=1)
        y1 = self.drop(self.f_pw(self.f_dw(x1).mean(2, keepdim=True))) + x1
        y2 = self.drop(self.t_pw(self.t_dw(x2).mean(3, keepdim=True))) + x2
        return torch.cat((y1, y2), dim=1)


class LookAlike(nn.Module):
    """A small TF-SepNet look-alike with the same kinds of ops."""

    def __init__(self, n_classes=10):
        super().__init__()
        self.stem = nn.Sequential(cbr(1, 8, 3, 2, 1), cbr(8, 32, 3, 2, 1, g=8))
        self.body = nn.Sequential(ResNorm(), Block(32, 16), Block(16, 16), ResNorm(), nn.MaxPool2d(2), Block(16, 24),
                                  ResNorm())
        self.head = nn.Conv2d(24, n_classes, 1)

    def forward(self, x):
        return self.head(self.body(self.stem(x))).mean((2, 3))


def toy_data(n, gen, n_classes=10, shape=(32, 33)):
    """Class k = a bright band at frequency rows 3k..3k+2, on noise; (n, 1, F, T) and labels."""
    y = torch.randint(0, n_classes, (n,), generator=gen)
    x = torch.randn(n, 1, *shape, generator=gen)
    for k in range(n_classes):
        x[y == k, :, 3 * k:3 * k + 3, :] += 1.5
    return x, y


@pytest.fixture(scope="module")
def trained():
    """LookAlike trained for 72 steps on the toy task (a few seconds on 2 cores)."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    x, y = toy_data(768, gen)
    model = LookAlike()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    model.train()
    for _ in range(3):
        for i in torch.randperm(len(x), generator=gen).split(32):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i]), y[i]).backward()
            opt.step()
    model.eval()
    xt, yt = toy_data(512, gen)
    qmodel = Q.quantize_int8(model, [x[i:i + 64] for i in range(0, 256, 64)])
    return model, qmodel, xt, yt


def test_really_int8(trained):
    model, qmodel, xt, _ = trained
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    ops = Q._ops(qmodel.lowered)
    assert ops.count(torch.ops.onednn.qconv_pointwise.default) == len(convs)  # every conv an INT8 kernel
    assert Q.is_int8(qmodel)
    assert torch.ops.aten._native_batch_norm_legit_no_training.default not in ops  # BatchNorm folded
    # activations between the convs are uint8 tensors: run the lowered graph with an interpreter
    seen = []

    class Watch(torch.fx.Interpreter):
        def call_function(self, target, args, kwargs):
            out = super().call_function(target, args, kwargs)
            if target == torch.ops.onednn.qconv_pointwise.default:
                seen.append((args[0].dtype, out.dtype))
            return out

    Watch(qmodel.lowered).run(torch.cat([xt[:4], xt.new_zeros(qmodel.batch - 4, *xt.shape[1:])]))
    assert len(seen) == len(convs) and all(a == torch.uint8 for a, _ in seen)
    # outputs: uint8 into the next INT8 op, or dequantised inside the kernel when a float op (mean, ResNorm) follows
    assert {b for _, b in seen} <= {torch.uint8, torch.float32}
    out = qmodel(xt[:4])
    assert out.dtype == torch.float32 and out.shape == (4, 10)
    # ResNorm stays float: its variance is computed in the lowered graph
    assert any("var" in str(t) for t in ops)


def test_any_batch_size_gives_the_same_rows(trained):
    _, qmodel, xt, _ = trained
    full = qmodel(xt[:150])  # 64 + 64 + 22 (zero-padded)
    assert torch.equal(qmodel(xt[:5]), full[:5]) and torch.equal(qmodel(xt[128:150]), full[128:])
    with pytest.raises(ValueError, match="built for inputs"):
        qmodel(torch.zeros(2, 1, 16, 33))


def test_accuracy_kept(trained):
    model, qmodel, xt, yt = trained
    f, q = Q.logits(model, xt), Q.logits(qmodel, xt)
    acc_f = (f.argmax(1) == yt).float().mean().item()
    acc_q = (q.argmax(1) == yt).float().mean().item()
    agree = (f.argmax(1) == q.argmax(1)).float().mean().item()
    assert acc_f > 0.8, f"toy task not learned ({acc_f:.3f})"
    assert acc_q >= acc_f - 0.02, (acc_f, acc_q)
    assert agree >= 0.95, agree
    rel = ((f - q).norm() / f.norm()).item()
    assert rel < 0.1, rel


def test_param_bytes(trained):
    model, qmodel, _, _ = trained
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    n_w = sum(c.weight.numel() for c in convs)
    n_out = sum(c.out_channels for c in convs)
    br = Q.int8_param_breakdown(qmodel)
    assert br["weights_int8"] == n_w
    assert br["biases_fp32"] == 4 * n_out  # BN folded: every conv has a float bias
    assert br["weight_scales_fp32"] == 4 * n_out  # per-channel
    assert br["float_params"] == 0
    assert br["activation_qparams"] == 5 * sum(t == torch.ops.quantized_decomposed.quantize_per_tensor.default
                                               for t in Q._ops(qmodel.reference))
    assert br["total"] == sum(v for k, v in br.items() if k != "total") == Q.int8_param_bytes(qmodel)
    # a model this small is dominated by per-channel biases and scales; TF-SepNet's ratio is tested below
    n_params = sum(p.numel() for p in model.parameters())
    assert br["total"] < 4 * n_params / 2


@pytest.mark.parametrize("bad", [torch.empty(0, 1, 32, 33), [], [torch.empty(0, 1, 32, 33)], None])
def test_empty_calibration_raises(bad):
    with pytest.raises(ValueError, match="calibration"):
        Q.quantize_int8(LookAlike().eval(), bad)


def test_calibration_batches_forms_and_the_caller_model_untouched():
    torch.manual_seed(2)
    model = LookAlike().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    types = [type(m) for m in model.modules()]
    x = torch.randn(16, 1, 32, 33)
    y = torch.zeros(16, dtype=torch.long)
    q = Q.quantize_int8(model, [(x[:8], y[:8]), (x[8:], y[8:])], batch=8)  # DataLoader-style pairs
    assert Q.is_int8(q)
    assert torch.allclose(Q.logits(q, x, batch_size=5), q(x))
    with pytest.raises(ValueError):
        Q.logits(q, x[:0])
    # the caller's model: still in training mode, same modules, same weights
    assert model.training and [type(m) for m in model.modules()] == types
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.fixture(scope="module")
def tfsepnet_int8():
    """TF-SepNet (random weights) and its INT8 model, calibrated on 16 of 48 random inputs (64 mels keeps
    the tests fast; any F >= 16 works)."""
    from asc_lib.models import tfsepnet

    torch.manual_seed(0)
    model = tfsepnet.TFSepNet().eval()
    x = torch.randn(48, 1, 64, 65)
    return model, Q.quantize_int8(model, x[:16], batch=16), x


@pytest.mark.newest_leg
def test_tfsepnet_int8(tfsepnet_int8):
    from asc_lib.complexity import MAX_PARAM_BYTES, count_params, param_bytes

    model, qmodel, x = tfsepnet_int8
    assert count_params(model) == 126_858
    assert Q.is_int8(qmodel)
    assert Q._ops(qmodel.lowered).count(torch.ops.aten.var_mean.correction) == 5  # the 5 ResNorms, in float
    f, q = Q.logits(model, x[16:]), Q.logits(qmodel, x[16:])
    assert (f.argmax(1) == q.argmax(1)).float().mean().item() >= 0.9
    assert ((f - q).norm() / f.norm()).item() < 0.15

    br = Q.int8_param_breakdown(qmodel)
    # DCASE convention (float model's parameter count x 1 byte) is within the 128 kB limit ...
    assert param_bytes(model) == 126_858 <= MAX_PARAM_BYTES
    # ... and so are the INT8 weights themselves (BN folded: 121,418 - 10 head bias = 121,408) ...
    assert br["weights_int8"] == 121_408 <= MAX_PARAM_BYTES
    # ... but with the float32 biases (2,730, from BN folding) and per-channel scales it is NOT:
    # 121,408 + 10,920 + 10,920 + 2,730 + activation qparams = about 146.4 kB > 131,072.
    assert br["biases_fp32"] == 4 * 2_730 and br["weight_scales_fp32"] == 4 * 2_730
    assert MAX_PARAM_BYTES < br["total"] < 1.2 * count_params(model)
    assert br["total"] < 4 * count_params(model) / 3


def test_depthwise_form_is_the_same_model():
    # the stem's grouped conv (1 input channel per group, 4 outputs) becomes repeat + depthwise conv
    from asc_lib.models import tfsepnet

    torch.manual_seed(0)
    model = tfsepnet.TFSepNet().eval()
    dw = Q.depthwise_form(model).eval()
    convs = [m for m in dw.modules() if isinstance(m, torch.nn.Conv2d)]
    assert not any(1 < c.groups == c.in_channels < c.out_channels for c in convs)
    assert sum(isinstance(m, Q._RepeatChannels) for m in dw.modules()) == 1
    before = {k: v.shape for k, v in model.state_dict().items()}
    assert sorted(before.values(), key=str) == sorted((v.shape for v in dw.state_dict().values()), key=str)
    x = torch.randn(4, 1, 64, 65)
    with torch.no_grad():
        assert torch.allclose(model(x), dw(x), atol=1e-5)
    assert any(1 < c.groups == c.in_channels < c.out_channels for c in model.modules()
               if isinstance(c, torch.nn.Conv2d))  # the caller's model untouched


@pytest.mark.newest_leg
def test_compiled_int8_gives_the_eager_int8_classes(trained):
    _, qmodel, xt, _ = trained
    compiled, seconds = Q.compile_cpu(qmodel, xt[:64])
    assert seconds > 0 and isinstance(compiled, Q.Int8Model)
    eager, fast = Q.logits(qmodel, xt[:128]), Q.logits(compiled, xt[:128])
    assert (eager.argmax(1) == fast.argmax(1)).float().mean().item() >= 0.9
    assert ((eager - fast).norm() / eager.norm()).item() < 0.05
