"""INT8 post-training static quantisation (x86 backend) that really runs in INT8 on the CPU.

Toolchain: ``torch.ao.quantization`` FX graph mode (``prepare_fx`` / ``convert_fx`` with
``get_default_qconfig_mapping("x86")``). Why, from what was observed in this venv (torch 2.11.0,
Python 3.11, 2 CPU cores, gcc present):

* **FX graph mode** ships with torch 2.11 and works on TF-SepNet as written. ``convert_fx`` lowers the
  graph to real quantised modules (``torch.ao.nn.intrinsic.quantized.ConvReLU2d``,
  ``torch.ao.nn.quantized.Conv2d``, both holding fbgemm/x86 packed INT8 weights) and
  ``torch.ops.quantized.add``/``cat``/``mean`` on ``quint8`` tensors: the model runs INT8 kernels
  eagerly, no compiler needed. BatchNorm is folded into the preceding conv and ReLU fused
  (``fuse_fx`` inside ``prepare_fx``, model in eval mode). It is *deprecated*: calling ``prepare_fx``
  warns "torch.ao.quantization is deprecated and will be removed in 2.10 ... migrate to torchao pt2e"
  (the warning's version is already past: the code is still there and working in 2.11), and the
  default x86 observers warn "Please use quant_min and quant_max ... reduce_range will be
  deprecated". Both are silenced here (only those two messages) because they are known and
  understood; nothing else is filtered.
* **Eager mode** (``torch.ao.quantization.quantize``) is equally deprecated and would need
  ``QuantStub``/``DeQuantStub`` and ``FloatFunctional`` edits to the model (``+``, ``cat``), i.e.
  changes to ``asc_lib/models/tfsepnet.py``; FX needs none.
* **PT2E** (``torch.export`` + ``X86InductorQuantizer`` + ``prepare_pt2e``/``convert_pt2e``) is the
  maintained path, but it is no longer in torch 2.11 (``torch/ao/quantization/quantize_pt2e.py`` and
  ``quantizer/`` are gone); it lives in ``torchao`` (0.18.0 on PyPI, not installed in the project
  venv; tried from a scratch ``--target`` directory). Observed: with the default non-strict
  ``torch.export.export`` of torch 2.11 the nodes carry no ``source_fn_stack``, so the quantizer
  annotates *nothing* and ``convert_pt2e`` silently returns a float model (max |diff| 1e-7); with
  ``strict=True`` it annotates. The converted graph is a quantise/dequantise *reference* model that
  runs in float (slower than float eager: 1.24 s vs 0.55 s for a 3-conv toy model, batch 256 of
  1x64x65, 2 threads); INT8 execution needs ``torch.compile`` (inductor + a C++ compiler; gcc works
  here): 19 s to compile the toy model, and then it ran in 2.2 s, slower than float eager. So: an
  extra dependency, a compile step per process, no speed gain observed on this CPU, and a silent
  no-op pitfall. Move to it when FX is finally removed.

Observed on TF-SepNet-64 (random weights, 2 threads, batch 256 of 1x256x65): float eager 5.2 s,
INT8 (this module) 4.4 s; quantising with 32 calibration examples takes about 8-14 s.

Non-quantised pieces: :class:`~asc_lib.models.tfsepnet.ResNorm` (per-bin mean/var/sqrt/divide, no
parameters) is kept as a float leaf module (declared non-traceable and given qconfig ``None``), with
a dequantise before and a quantise after it; any ``nn.InstanceNorm*``/``nn.GroupNorm``/``nn.LayerNorm``
too (see :func:`default_float_modules`). Channel shuffle (reshape/transpose), ``chunk``, max-pool and
the means run directly on quantised tensors; ``torch.chunk`` is not in the x86 backend config, so
FX dequantises before it and requantises each half (still INT8 everywhere that has weights).
The broadcast residual adds are re-pointed to :func:`_qadd` (same ``quantized::add`` kernel, larger
operand first) to avoid a per-call "output was resized" warning from the kernel.

Parameter memory (:func:`int8_param_breakdown`): counted as an INT8 deployment would store it, per
quantised module: INT8 weights (1 byte each), float32 biases (4 bytes each: fbgemm keeps the bias in
float; after BN folding *every* conv has one), weight scales as float32 (4 bytes per output channel,
per-channel symmetric) and weight zero points as 1 byte each (they are all 0); plus per quantised
tensor (every module output and quantise node) one float32 scale and a 1-byte zero point. PyTorch
itself keeps per-channel scales as float64 and zero points as int64; that is an in-memory artefact
and is not counted, but :func:`state_dict_bytes` gives the serialised size for comparison. The
DCASE convention (the paper's "126.9 kB") instead counts the float model's parameters at one byte
each: :func:`asc_lib.complexity.param_bytes`.
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Iterable, Sequence

import torch
from torch import nn

__all__ = [
    "ENGINE",
    "default_float_modules",
    "int8_param_breakdown",
    "int8_param_bytes",
    "is_int8",
    "logits",
    "quantize_int8",
    "quantized_modules",
    "set_engine",
    "state_dict_bytes",
]

ENGINE = "x86"
_SILENCED = (
    r"torch\.ao\.quantization is deprecated",
    r"Please use quant_min and quant_max to specify the range for observers",
)


def set_engine(engine: str = ENGINE) -> str:
    """Select the quantised CPU engine (``x86``, i.e. fbgemm + oneDNN); raise if unsupported."""
    supported = torch.backends.quantized.supported_engines
    if engine not in supported:
        raise RuntimeError(f"quantized engine {engine!r} not supported by this torch build ({supported})")
    torch.backends.quantized.engine = engine
    return engine


def default_float_modules(model: nn.Module) -> tuple[type, ...]:
    """Module types in ``model`` to keep in float: ``ResNorm`` (by class name) and torch's norms."""
    keep = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.GroupNorm, nn.LayerNorm)
    found = {type(m) for m in model.modules() if type(m).__name__ == "ResNorm" or isinstance(m, keep)}
    return tuple(sorted(found, key=lambda t: t.__qualname__))


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


def quantize_int8(model: nn.Module, calibration: Iterable[torch.Tensor] | torch.Tensor, *,
                  example_input: torch.Tensor | None = None,
                  float_modules: Sequence[type] | None = None,
                  engine: str = ENGINE) -> nn.Module:
    """Post-training static INT8 quantisation (FX graph mode, x86 qconfig); caller's model untouched.

    ``calibration``: a tensor of inputs (split into batches of 64) or an iterable of batches (tensors
    or ``(x, y)`` pairs); all are run through the observed model. ``example_input``: used for
    tracing (default: the first calibration batch). ``float_modules``: module types kept in float
    (default :func:`default_float_modules`). Returns a ``GraphModule`` in eval mode on the CPU
    that takes float input and returns float logits; inside, convs/adds/cat/mean run INT8 kernels.
    """
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    batches = _batches(calibration)
    set_engine(engine)
    example = batches[0][:1] if example_input is None else example_input
    m = copy.deepcopy(model).cpu().eval()
    keep = tuple(default_float_modules(m) if float_modules is None else float_modules)
    qmap = get_default_qconfig_mapping(engine)
    for t in keep:
        qmap = qmap.set_object_type(t, None)
    custom = PrepareCustomConfig().set_non_traceable_module_classes(list(keep))
    with warnings.catch_warnings():
        for msg in _SILENCED:
            warnings.filterwarnings("ignore", message=msg)
        prepared = prepare_fx(m, qmap, (example.cpu(),), prepare_custom_config=custom)
        with torch.inference_mode():
            for b in batches:
                prepared(b.cpu().float())
        qmodel = convert_fx(prepared)
    _big_operand_first(qmodel)
    return qmodel.eval()


def _qadd(a, b, scale, zero_point):
    """``quantized::add`` with the larger operand first (same INT8 kernel, same result).

    With the smaller, broadcast operand first (``pw(mean(x)) + x`` in a TF-separable block) the
    kernel resizes its output and warns on every call (``Resize.cpp``: "An output with one or more
    elements was resized ... deprecated"); addition commutes, so swap.
    """
    if a.numel() < b.numel():
        a, b = b, a
    return torch.ops.quantized.add(a, b, scale, zero_point)


def _qadd_relu(a, b, scale, zero_point):
    """As :func:`_qadd`, for ``quantized::add_relu``."""
    if a.numel() < b.numel():
        a, b = b, a
    return torch.ops.quantized.add_relu(a, b, scale, zero_point)


def _big_operand_first(qmodel: nn.Module) -> None:
    graph = getattr(qmodel, "graph", None)
    if graph is None:
        return
    swap = {torch.ops.quantized.add: _qadd, torch.ops.quantized.add_relu: _qadd_relu,
            torch.ops.quantized.add.default: _qadd, torch.ops.quantized.add_relu.default: _qadd_relu}
    changed = False
    for node in graph.nodes:
        if node.op == "call_function" and node.target in swap and len(node.args) == 4 and not node.kwargs:
            node.target = swap[node.target]
            changed = True
    if changed:
        qmodel.recompile()


def quantized_modules(qmodel: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules of ``qmodel`` that hold INT8 weights (``torch.ao.nn.quantized`` conv/linear and fused)."""
    import torch.ao.nn.quantized as nnq

    return [(n, m) for n, m in qmodel.named_modules() if isinstance(m, (nnq.Conv1d, nnq.Conv2d, nnq.Linear))]


def is_int8(qmodel: nn.Module) -> bool:
    """True when every conv/linear of ``qmodel`` is a quantised (INT8 weight) module."""
    float_ops = [m for m in qmodel.modules() if type(m) in (nn.Conv1d, nn.Conv2d, nn.Linear)]
    return bool(quantized_modules(qmodel)) and not float_ops


def _qparams_of_tensors(qmodel: nn.Module) -> int:
    """Number of quantised activation tensors: outputs of quantised modules + quantise nodes."""
    n = len(quantized_modules(qmodel))
    graph = getattr(qmodel, "graph", None)
    if graph is not None:
        for node in graph.nodes:
            if node.op == "call_function" and node.target in (torch.quantize_per_tensor, torch.ops.quantized.add,
                                                              torch.ops.quantized.add_relu, torch.ops.quantized.cat,
                                                              torch.ops.quantized.mul, _qadd, _qadd_relu):
                n += 1
    return n


def int8_param_breakdown(qmodel: nn.Module) -> dict[str, int]:
    """Bytes of what the quantised model stores, by kind (see the module docstring); ``total`` sums."""
    w = b = ch = 0
    for _, m in quantized_modules(qmodel):
        weight = m.weight()
        bias = m.bias()
        w += weight.numel() * weight.element_size()
        b += 0 if bias is None else bias.numel() * 4
        ch += weight.q_per_channel_scales().numel() if weight.qscheme() in (
            torch.per_channel_affine, torch.per_channel_symmetric) else 1
    out = {
        "weights_int8": w,
        "biases_fp32": b,
        "weight_scales_fp32": 4 * ch,
        "weight_zero_points_int8": ch,
        "activation_qparams": 5 * _qparams_of_tensors(qmodel),
    }
    # anything else float left in the model (parameters of float modules) at 4 bytes each
    out["float_params"] = sum(p.numel() * 4 for p in qmodel.parameters())
    out["total"] = sum(out.values())
    return out


def int8_param_bytes(qmodel: nn.Module) -> int:
    """Total parameter memory of the quantised model in bytes (``int8_param_breakdown(...)["total"]``)."""
    return int8_param_breakdown(qmodel)["total"]


def state_dict_bytes(model: nn.Module) -> int:
    """Size of ``torch.save(model.state_dict())`` in bytes (includes pickling and torch's overheads)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


@torch.no_grad()
def logits(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Float logits of ``model`` (float or INT8) for inputs ``x``, in eval mode, in batches; on the CPU."""
    if len(x) == 0:
        raise ValueError("no inputs")
    model.eval()
    return torch.cat([model(xb) for xb in x.split(batch_size)])
