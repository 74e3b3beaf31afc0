"""The students: TF-SepNet-64 (the paper's) and the DCASE2024 baseline's CP-Mobile, and their complexity."""

import pytest
import torch

from asc_lib import complexity
from asc_lib.models.cpmobile import CPMobile, make_divisible
from asc_lib.models.tfsepnet import ChannelShuffle, ResNorm, TFSepNet

ONE_SECOND = 64  # frames of 1 s at 32 kHz, hop 500, after the pre-emphasis (asc_lib.features.student_logmel)


def test_param_counts_are_exact():
    assert complexity.count_params(TFSepNet()) == 126_858  # PAPER.md, the authors' TF-SepNet-64
    assert complexity.count_params(CPMobile()) == 61_148  # baseline README
    assert make_divisible(32 * 1.8) == 56 and make_divisible(32 * 1.8**2) == 104 and make_divisible(32 * 2.1) == 64


def test_state_dict_names_follow_the_reference_code():
    tf_keys, cp_keys = TFSepNet().state_dict(), CPMobile().state_dict()
    assert "conv_layers.1._conv.weight" in tf_keys and "middle_layers.1.freq_dw_conv._bn.running_var" in tf_keys
    assert "middle_layers.5.trans_conv._conv.weight" in tf_keys and "classifier.conv.bias" in tf_keys
    assert "stages.s3.b6.block.2.1.weight" in cp_keys and "feed_forward.1.running_mean" in cp_keys


@pytest.mark.parametrize("n_mels", [256, 512])
@pytest.mark.parametrize("model_cls", [TFSepNet, CPMobile])
def test_forward_shape(model_cls, n_mels):
    out = model_cls().eval()(torch.randn(3, 1, n_mels, ONE_SECOND))
    assert out.shape == (3, 10) and torch.isfinite(out).all()


def test_parameter_free_parts():
    x = torch.randn(2, 6, 5, 7)
    y = ResNorm()(x)
    assert y.shape == x.shape and sum(p.numel() for p in ResNorm().parameters()) == 0
    normed = (y - 0.1 * x)  # frequency-wise instance norm: zero mean, unit (unbiased) var per (example, bin)
    assert torch.allclose(normed.mean((1, 3)), torch.zeros(2, 5), atol=1e-5)
    assert torch.allclose(normed.var((1, 3)), torch.ones(2, 5), atol=1e-3)
    shuffled = ChannelShuffle(groups=3)(x)  # halves interleaved: channels 0, 3, 1, 4, 2, 5
    assert torch.equal(shuffled, x[:, [0, 3, 1, 4, 2, 5]])


def test_the_student_input_for_one_second_has_64_frames():
    # the two-tap pre-emphasis leaves 31,999 samples; a centred STFT with hop 500 gives 1 + 31,999 // 500
    assert complexity.clip_shape(512) == (1, 1, 512, ONE_SECOND)
    assert complexity.clip_shape(256) == (1, 1, 256, ONE_SECOND)


def test_macs_as_torchinfo_counts_them():
    # Baseline README: 29,419,156 MACs (torchinfo via helpers/nessi.py) on its own input, a mel without
    # pre-emphasis (65 frames): reproduced exactly.
    assert complexity.count_macs(CPMobile(), (1, 1, 256, 65)) == 29_419_156
    # TF-SepNet: conv weights x output positions plus 5,440 for the BatchNorm parameters. On 65 frames
    # it gives the hand counts in PAPER.md (~30.7 M at 512 mels, ~15.4 M at 256), just above 30 M; on the
    # 64 frames it receives it is within.
    assert complexity.count_macs(TFSepNet(), (1, 1, 512, 65)) == 30_740_608
    assert complexity.count_macs(TFSepNet(), (1, 1, 256, 65)) == 15_444_448
    assert complexity.count_macs(TFSepNet(), (1, 1, 512, ONE_SECOND)) == 29_419_648
    assert complexity.count_macs(TFSepNet(), (1, 1, 256, ONE_SECOND)) == 14_782_944


def test_count_macs_leaves_the_model_untouched():
    model = TFSepNet().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    complexity.count_macs(model, (1, 1, 256, ONE_SECOND))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_complexity_table_rows_and_flags():
    table = complexity.complexity_table({"TF-SepNet": TFSepNet(), "CP-Mobile": CPMobile()},
                                        {"512 mels": (1, 1, 512, ONE_SECOND), "256 mels": (1, 1, 256, ONE_SECOND),
                                         "512 mels, 65 frames": (1, 1, 512, 65)})
    assert len(table) == 6
    row = table.set_index(["model", "input"])
    tf512, tf256, cp256 = row.loc[("TF-SepNet", "512 mels")], row.loc[("TF-SepNet", "256 mels")], row.loc[("CP-Mobile", "256 mels")]
    assert tf512.bytes_int8 == 126_858 and tf512.bytes_fp16 == 253_716
    assert tf512.fits_memory_int8 and not tf512.fits_memory_fp16  # TF-SepNet needs INT8
    assert tf512.fits_macs and tf256.fits_macs  # 29.42 M and 14.78 M
    assert not row.loc[("TF-SepNet", "512 mels, 65 frames")].fits_macs  # 30.74 M: one frame more is too many
    assert cp256.bytes_fp16 == 122_296 and cp256.fits_memory_fp16 and cp256.fits_macs  # baseline: float16
    assert not row.loc[("CP-Mobile", "512 mels")].fits_macs  # twice the mels, about twice the MACs
    shown = complexity.readable(table).loc[("TF-SepNet", "512 mels")]
    assert (shown["parameters"], shown["INT8 (kB)"], shown["MACs (M)"]) == ("126,858", "123.9", "29.42")
    assert (shown["≤ 128 kB at INT8"], shown["≤ 128 kB at float16"], shown["≤ 30 M MACs"]) == ("yes", "no", "yes")


@pytest.mark.parametrize("make", [lambda: TFSepNet(dropout=0.0), CPMobile], ids=["TFSepNet", "CPMobile"])
def test_a_few_adam_steps_reduce_the_loss(make):
    torch.manual_seed(0)
    model = make()  # TF-SepNet without dropout: 8 examples are too few to average its noise out
    x, y = torch.randn(8, 1, 32, 32), torch.arange(8) % 10  # small input: both are fully convolutional
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5  # about 2.3 -> 0.2 (TF-SepNet), 2.4 -> 0.8 (CP-Mobile)


@pytest.mark.parametrize("model_cls", [TFSepNet, CPMobile])
def test_eval_mode_is_deterministic(model_cls):
    model = model_cls().eval()
    x = torch.randn(2, 1, 256, ONE_SECOND)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        assert torch.allclose(model(x[:1]), model(x)[:1], atol=1e-5)  # no batch coupling in eval mode
