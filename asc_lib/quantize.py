"""INT8 post-training static quantisation on PyTorch's maintained path (PT2E, in torchao) that really
runs in INT8 on the CPU.

The flow, as PyTorch's documentation now names it for static quantisation on x86 CPUs:

1. ``torch.export.export(model, strict=True)``: the model as an ATen graph, the batch size left free.
   (The default non-strict export of torch 2.11 leaves the nodes without ``source_fn_stack``; the
   quantizer then annotates nothing and the result is silently a float model, so strict it is.)
2. ``prepare_pt2e`` with ``X86InductorQuantizer`` (default config): BatchNorm folded into the
   preceding conv, observers placed where the x86 backend has INT8 kernels (conv, conv + ReLU,
   conv + add, pooling and concatenation of quantised inputs); weights per output channel, symmetric,
   int8; activations per tensor, uint8, histogram observers.
3. calibration: every calibration batch runs through the observed graph.
4. ``convert_pt2e``: a *reference* graph, quantise/dequantise nodes around float ops, with the weights
   stored as int8 (this is the graph the byte accounting reads).
5. ``lower_pt2e_quantized_to_x86``: inductor's freezing passes fuse each dequantise -> conv ->
   quantise pattern into oneDNN's ``onednn.qconv_pointwise`` (int8 weights packed, uint8 activations,
   the ReLU fused in). The result runs eagerly, with no ``torch.compile`` and no
   C++ compiler. It is exported again for a fixed batch size, so :class:`Int8Model` feeds it batches
   of ``batch`` examples (the last one zero-padded; examples do not interact in eval mode).

What stays float: ResNorm (its mean/var/rsqrt are not in the quantizer's patterns), the max-pools that
follow it (their input is float), the means over time or frequency; each has a dequantise before it or
a quantise after it. Before export, every grouped convolution with one input channel per group and
several outputs (TF-SepNet's second stem conv: 32 groups, 4 outputs each) is rewritten as the same
weights in a depthwise convolution fed with each channel repeated (:func:`depthwise_form`: the same
float outputs, the same weights and bytes): oneDNN has an INT8 kernel for depthwise convolutions, but
ran that grouped one on its reference path, which took three quarters of the INT8 model's time.

Speed (:func:`compile_cpu`, :func:`cpu_speed`). Run eagerly, each float island costs a decomposed
dequantise and quantise (a multiply, round, clamp, add and copy over the whole tensor), and the INT8
model is slower than float. ``torch.compile`` (inductor, with freezing) fuses those into the float ops'
loops: compiled, INT8 runs faster than the float model eagerly, but the float model compiled the same
way (its BatchNorm folded, oneDNN's prepacked convolutions) was faster still on every CPU setting
measured (``bench/int8.py``: pinned to AVX2, and unpinned on AVX-512 with VNNI). Compilation calls the
C++ compiler and takes tens of seconds; inductor keeps what it compiled in its cache
(``TORCHINDUCTOR_CACHE_DIR``). Compiled code is not pinned (inductor picks its own vector width and
fast-math sums), so the published INT8 accuracy is the eager graph's; :func:`cpu_speed` reports how
often the compiled one agrees with it.

The replaced path (FX graph mode, ``torch.ao.quantization``) is deprecated and its
quantised tensor types warn of their removal in torch 2.14 and later.

Parameter memory (:func:`int8_param_breakdown`), counted as an INT8 deployment would store it, from the
converted graph: INT8 weights (1 byte each), float32 biases (4 bytes each: after BatchNorm folding every
conv has one), per-channel weight scales as float32 (4 bytes each) and weight zero points (1 byte each;
all 0), and per quantised activation tensor (each quantise node) one float32 scale and a 1-byte zero
point; plus any float parameter the graph still uses, at 4 bytes. The DCASE convention (the paper's
"126.9 kB") instead counts the float model's parameters at one byte each:
:func:`asc_lib.complexity.param_bytes`.
"""

from __future__ import annotations

import copy
import logging
import statistics
import time
import warnings
from collections.abc import Iterable
from operator import attrgetter

import torch
from torch import nn

__all__ = ["Int8Model", "compile_cpu", "cpu_speed", "depthwise_form", "int8_param_breakdown", "int8_param_bytes",
           "is_int8", "logits", "quantize_int8"]

# Known, understood and harmless: the max-pools after a float ResNorm stay float (the quantizer says so
# for each); torchao's observers still use torch.jit.script_method, and copying an exported graph
# still checks ``isinstance(treespec, LeafSpec)``, both deprecated in torch 2.10+.
_SILENCED = (r"The input of maxpool2d is not quantized", r"`torch\.jit\.script_method` is deprecated",
             r"`isinstance\(treespec, LeafSpec\)` is deprecated")


def _pt2e():
    """torchao's PT2E entry points (imported on first use: only INT8 needs torchao)."""
    pytree_log = logging.getLogger("torch.utils._pytree")  # torch 2.15 logs a deprecation for one of
    level = pytree_log.level                                # torchao's enums while torchao imports
    pytree_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            for msg in _SILENCED:
                warnings.filterwarnings("ignore", message=msg)
            from torchao.quantization.pt2e.lowering import lower_pt2e_quantized_to_x86
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
            from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq
    finally:
        pytree_log.setLevel(level)
    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    return quantizer, prepare_pt2e, convert_pt2e, lower_pt2e_quantized_to_x86


def _batches(calibration) -> list[torch.Tensor]:
    if isinstance(calibration, torch.Tensor):
        if calibration.dim() == 0 or len(calibration) == 0:
            raise ValueError("calibration tensor is empty: need at least one example")
        return list(calibration.split(64))
    if calibration is None:
        raise ValueError("calibration data is required (a tensor or an iterable of batches)")
    out = []
    for b in calibration:
        if isinstance(b, (tuple, list)):  # (x, y) pairs from a DataLoader
            b = b[0]
        if not isinstance(b, torch.Tensor):
            raise ValueError(f"calibration batches must be tensors, got {type(b).__name__}")
        if len(b):
            out.append(b)
    if not out:
        raise ValueError("calibration data is empty: need at least one non-empty batch")
    return out


class Int8Model(nn.Module):
    """The lowered INT8 graph (fixed batch size ``batch``) behind a module that takes any batch of float
    inputs and returns float logits. ``reference`` is the converted quantise/dequantise graph (int8
    weights), which :func:`int8_param_breakdown` reads and which runs the same maths in float."""

    def __init__(self, lowered: nn.Module, reference: nn.Module, batch: int, example_shape: tuple[int, ...]):
        super().__init__()
        self.lowered, self.reference, self.batch, self.example_shape = lowered, reference, batch, example_shape

    def train(self, mode: bool = True) -> "Int8Model":
        """Inference only: stays in eval mode (exported graphs refuse ``train()`` and ``eval()``)."""
        self.training = False
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.example_shape:
            raise ValueError(f"this INT8 model was built for inputs (B, {', '.join(map(str, self.example_shape))}), "
                             f"got {tuple(x.shape)}")
        out = []
        for xb in x.float().cpu().split(self.batch):
            n = len(xb)
            if n < self.batch:
                xb = torch.cat([xb, xb.new_zeros((self.batch - n, *xb.shape[1:]))])
            out.append(self.lowered(xb)[:n])
        return torch.cat(out)


class _RepeatChannels(nn.Module):
    def __init__(self, repeats: int):
        super().__init__()
        self.repeats = repeats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(self.repeats, dim=1)


def depthwise_form(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in which every ``Conv2d`` with one input channel per group and ``r > 1`` outputs
    per group is a channel repeat (each input channel ``r`` times) followed by a depthwise ``Conv2d`` with
    the same weight tensor: output channel ``j`` still convolves input channel ``j // r`` with its own
    kernel, so the float outputs are the same and the state dict keeps its shapes."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, c in list(parent.named_children()):
            if isinstance(c, nn.Conv2d) and 1 < c.groups == c.in_channels < c.out_channels:
                dw = nn.Conv2d(c.out_channels, c.out_channels, c.kernel_size, c.stride, c.padding, c.dilation,
                               groups=c.out_channels, bias=c.bias is not None, padding_mode=c.padding_mode)
                dw.load_state_dict(c.state_dict())
                setattr(parent, name, nn.Sequential(_RepeatChannels(c.out_channels // c.groups), dw))
    return model


def quantize_int8(model: nn.Module, calibration: Iterable[torch.Tensor] | torch.Tensor, *,
                  batch: int = 64) -> Int8Model:
    """Post-training static INT8 quantisation (PT2E, x86 quantizer, oneDNN kernels); caller's model untouched.

    ``calibration``: a tensor of inputs (split into batches of 64) or an iterable of batches (tensors or
    ``(x, y)`` pairs); all are run through the observed model. ``batch``: the lowered graph's batch size.
    Returns an :class:`Int8Model` on the CPU that takes float input and returns float logits; inside, every
    conv runs oneDNN's INT8 kernel.
    """
    batches = [b.cpu().float() for b in _batches(calibration)]
    quantizer, prepare_pt2e, convert_pt2e, lower = _pt2e()
    m = depthwise_form(model).cpu().eval()
    example = batches[0][:2] if len(batches[0]) >= 2 else batches[0].expand(2, *batches[0].shape[1:])
    free_batch = ({0: torch.export.Dim("batch", min=1)},)
    with warnings.catch_warnings():
        for msg in _SILENCED:
            warnings.filterwarnings("ignore", message=msg)
        graph = torch.export.export(m, (example,), dynamic_shapes=free_batch, strict=True).module()
        prepared = prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            for b in batches:
                prepared(b)
        reference = convert_pt2e(prepared)
        with torch.no_grad():
            lowered = lower(reference, (torch.zeros(batch, *example.shape[1:]),))
    return Int8Model(lowered, reference, batch, tuple(example.shape[1:]))


def _ops(graph_module: nn.Module) -> list:
    return [n.target for n in graph_module.graph.nodes if n.op == "call_function"]


def is_int8(qmodel: Int8Model) -> bool:
    """True when every convolution of the lowered graph is a oneDNN INT8 kernel (none left in float)."""
    ops = _ops(qmodel.lowered)
    return torch.ops.onednn.qconv_pointwise.default in ops and not any(
        t in ops for t in (torch.ops.aten.convolution.default, torch.ops.aten.conv2d.default,
                           torch.ops.aten.linear.default, torch.ops.aten.addmm.default))


def int8_param_breakdown(qmodel: Int8Model) -> dict[str, int]:
    """Bytes of what the quantised model stores, by kind (see the module docstring); ``total`` sums."""
    ref = qmodel.reference
    q = torch.ops.quantized_decomposed
    out = dict.fromkeys(["weights_int8", "biases_fp32", "weight_scales_fp32", "weight_zero_points_int8",
                         "activation_qparams", "float_params"], 0)
    counted = set()
    for node in ref.graph.nodes:
        if node.op != "call_function":
            continue
        if node.target == q.dequantize_per_channel.default and node.args[0].op == "get_attr":
            weight, scales = attrgetter(node.args[0].target)(ref), attrgetter(node.args[1].target)(ref)
            out["weights_int8"] += weight.numel() * weight.element_size()
            out["weight_scales_fp32"] += 4 * scales.numel()
            out["weight_zero_points_int8"] += scales.numel()
            counted.update(a.target for a in node.args[:3])
        elif node.target in (q.quantize_per_tensor.default, q.quantize_per_tensor.tensor):
            out["activation_qparams"] += 5
        elif node.target in (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default) and \
                len(node.args) > 2 and getattr(node.args[2], "op", None) == "get_attr":
            out["biases_fp32"] += 4 * attrgetter(node.args[2].target)(ref).numel()
            counted.add(node.args[2].target)
    for node in ref.graph.nodes:  # any other float tensor the graph uses, at 4 bytes each
        if node.op == "get_attr" and node.target not in counted:
            t = attrgetter(node.target)(ref)
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                out["float_params"] += 4 * t.numel()
    out["total"] = sum(out.values())
    return out


def int8_param_bytes(qmodel: Int8Model) -> int:
    """Total parameter memory of the quantised model in bytes (``int8_param_breakdown(...)["total"]``)."""
    return int8_param_breakdown(qmodel)["total"]


@torch.no_grad()
def logits(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Float logits of ``model`` (float or INT8) for inputs ``x``, in eval mode, in batches; on the CPU."""
    if len(x) == 0:
        raise ValueError("no inputs")
    model.eval()
    return torch.cat([model(xb) for xb in x.split(batch_size)])


def compile_cpu(model: nn.Module, example: torch.Tensor):
    """``torch.compile`` (inductor, freezing on: weights folded and prepacked as constants) of a float or
    INT8 model for inference on the CPU, compiled by a first call on ``example``; ``(compiled, seconds)``.
    An :class:`Int8Model` keeps its wrapper (fixed batch, padding) and compiles its lowered graph."""
    import torch._inductor.config as inductor_config

    # on a machine without CUDA, inductor's C++ build logs that it found no CUDA runtime: nothing to act on
    build_log = logging.getLogger("torch.utils.cpp_extension")
    level = build_log.level
    build_log.setLevel(logging.ERROR)
    t0 = time.perf_counter()
    try:
        with inductor_config.patch(freezing=True), torch.no_grad():
            if isinstance(model, Int8Model):
                compiled = Int8Model(torch.compile(model.lowered), model.reference, model.batch, model.example_shape)
            else:
                compiled = torch.compile(model.eval())
            compiled(example)
    finally:
        build_log.setLevel(level)
    return compiled, time.perf_counter() - t0


def _clips_per_second(fn, x: torch.Tensor, repeats: int) -> float:
    with torch.no_grad():
        fn(x)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - t0)
    return len(x) / statistics.median(times)


def cpu_speed(model: nn.Module, qmodel: Int8Model, x: torch.Tensor, repeats: int = 5) -> list[dict]:
    """Inference throughput on the CPU of ``model`` (float32) and ``qmodel`` (its INT8 version), eager and
    compiled (:func:`compile_cpu`), on the batch ``x`` (``len(x) == qmodel.batch`` times a whole number):
    one row each with ``clips/s`` (median of ``repeats`` runs), ``vs float32 eager`` (x), the compile
    ``seconds`` and, for the compiled INT8 model, the share of ``x`` it gives the eager INT8 model's class."""
    model = model.cpu().eval()
    x = x.cpu().float()
    fc, f_s = compile_cpu(model, x)
    qc, q_s = compile_cpu(qmodel, x)
    with torch.no_grad():
        same = (qc(x).argmax(1) == qmodel(x).argmax(1)).float().mean().item()
    rows = [("float32", "eager", model, None, None), ("float32", "compiled", fc, f_s, None),
            ("INT8", "eager", qmodel, None, None), ("INT8", "compiled", qc, q_s, same)]
    out = [{"model": m, "run": run, "clips/s": _clips_per_second(fn, x, repeats), "compile seconds": secs,
            "same class as INT8 eager": agree} for m, run, fn, secs, agree in rows]
    for r in out:
        r["vs float32 eager"] = r["clips/s"] / out[0]["clips/s"]
    return out
