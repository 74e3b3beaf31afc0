"""Pinned CPU kernels: the same bits on any x86-64 machine (no torch import here).

The kernels that torch, MKL, oneDNN and NumPy pick depend on the CPU (AVX2 only or AVX-512, Intel or
AMD), and so do the float sums they make: a chapter executed on one machine printed other numbers on
another. :data:`PINNED_ENV` pins torch and oneDNN to AVX2 (which every x86-64 machine of this project's
kinds has), MKL to its vendor-independent compatible path and NumPy to its AVX2 kernels.
The variables are read when the libraries load, so they must be set before the process's first
``import torch``: importing ``asc_lib`` does it (``asc_lib/__init__.py``), and ``tasks.py`` sets them
for every process it starts. Set ``ASC_KERNELS=native`` to opt out (faster, not repeatable across CPUs).
"""

from __future__ import annotations

import os
import platform

# Checked with bench/cross_cpu.py: a Zen 4 (AVX-512) host and QEMU's AVX2-only Haswell (Intel) and
# EPYC-Rome (AMD) give the same bits, except MKL's float32 sqrt (torch.sqrt and pow(x, 0.5)): the kernel
# MKL runs on AMD, and under COMPATIBLE on Intel, starts from rsqrtps, a hardware estimate whose bits
# differ between vendors (and under QEMU); no variable avoids it, only code can. So the library never
# calls them on float tensors: fused Adam/AdamW, and torch.rsqrt in ResNorm and Freq-MixStyle.
PINNED_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's own vectorised kernels (elementwise ops, reductions, sleef)
    # MKL (BLAS, FFT, and torch's log/exp/erf/sqrt through VML): COMPATIBLE, because MKL honours no other
    # branch on AMD CPUs (AVX2 there silently means AUTO); with AVX2 an Intel CPU took other FFT and
    # log/exp kernels than an AMD one. Costs 2-2.5x on sgemm, so BEATs' large Linear layers run on
    # oneDNN instead (asc_lib.models.beats.Linear); TF-SepNet, mostly oneDNN, ~10 %; FFT and VML not
    # measurably slower.
    "MKL_CBWR": "COMPATIBLE,STRICT",
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN (convolutions)
    "DNNL_MAX_CPU_ISA": "AVX2",  # the same, as older oneDNN builds spell it
    # numpy's AVX-512 float64 exp/log/log2/power (SVML) differ in the last bit from its AVX2 path (the
    # generated clips). Names as numpy 2.4 (pinned) spells its targets; a numpy that spells them
    # otherwise ignores them with a hidden ImportWarning. Silent on CPUs without them. Read when numpy
    # is first imported, like the others when torch is.
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
}


def applies() -> bool:
    """Pinning applies on x86-64 unless ``ASC_KERNELS=native``."""
    return platform.machine().lower() in ("x86_64", "amd64") and os.environ.get("ASC_KERNELS", "pinned") != "native"


def pin_kernels(env=None):
    """Put :data:`PINNED_ENV` into ``env`` (default ``os.environ``) where a key is not set yet, when
    :func:`applies`; returns ``env``."""
    env = os.environ if env is None else env
    if applies():
        for key, value in PINNED_ENV.items():
            env.setdefault(key, value)
    return env


def kernels_status() -> str:
    """One line saying whether this process runs torch on the pinned kernels, and if not, why not
    (the Quick tour prints it: an unpinned re-execution then shows why its numbers moved)."""
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    if not applies():
        return f"CPU kernels not pinned ({platform.machine()}, ASC_KERNELS={os.environ.get('ASC_KERNELS', '')!r}): torch uses {capability}"
    wrong = [k for k, v in PINNED_ENV.items() if os.environ.get(k) != v]
    if capability == "AVX2" and not wrong:
        return "CPU kernels pinned (torch and oneDNN: AVX2; MKL: compatible; NumPy: no AVX-512)"
    return f"CPU kernels NOT pinned: torch uses {capability}; set differently: {', '.join(wrong) or 'none'} (was torch imported before asc_lib?)"


def cpu_name() -> str:
    """The CPU's model name (Linux: ``/proc/cpuinfo``; elsewhere ``platform.processor()``) and its core count."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"
