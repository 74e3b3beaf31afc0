"""Where the pinned kernels' tax on BEATs fine-tuning comes from: one Linear layer's forward and backward
at the small BEATs' sizes (1,536 rows: a batch of 32 clips of 48 tokens), through each route to a float32
matrix product torch offers on the CPU.

    python bench/linear.py                      # pinned (the book's setting)
    ASC_KERNELS=native python bench/linear.py   # this CPU's own kernels
    ASC_KERNELS=native MKL_ENABLE_INSTRUCTIONS=AVX2 python bench/linear.py

Routes: ``F.linear`` (MKL's sgemm: under pinning its vendor-independent COMPATIBLE path), a 1x1
``conv1d`` on oneDNN over the transposed rows (the book's route until stop 32), the same 1x1 convolution
with the rows as a channels-last image (``asc_lib.models.beats.Linear``, what the book's BEATs uses when
pinned), and
oneDNN's inner product (``torch.ops.mkldnn._linear_pointwise``, with a hand-written backward). Prints the
median milliseconds of forward + backward over 15 runs (2 threads) and the largest difference from
``F.linear`` (the routes sum in other orders).
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from asc_lib import kernels

ROWS = 32 * 48


def as_conv1d(x, w, b):  # the book's route before: the rows transposed into one long sequence
    cols = x.reshape(1, -1, w.shape[1]).transpose(1, 2)
    return F.conv1d(cols, w.unsqueeze(-1), b).transpose(1, 2).reshape(*x.shape[:-1], w.shape[0])


def as_conv_cl(x, w, b):  # asc_lib.models.beats.Linear: the rows as a channels-last image, no copy
    cols = x.reshape(1, 1, -1, w.shape[1]).permute(0, 3, 1, 2)
    return F.conv2d(cols, w[:, :, None, None], b).permute(0, 2, 3, 1).reshape(*x.shape[:-1], w.shape[0])


def _ip(a, w, b=None):
    return torch.ops.mkldnn._linear_pointwise(a, w, b, "none", [], "")


class _InnerProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        return _ip(x, w, b)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        return _ip(g, w.t().contiguous()), _ip(g.t().contiguous(), x.t().contiguous()), g.sum(0)


def inner_product(x, w, b):
    return _InnerProduct.apply(x.reshape(-1, x.shape[-1]), w, b).reshape(*x.shape[:-1], w.shape[0])


def ms(fn, x, w, b, g, runs: int = 15) -> float:
    def step():
        fn(x, w, b).backward(g)
    for _ in range(3):
        step()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    print(f"{kernels.cpu_name()}; {kernels.kernels_status()}")
    routes = {"F.linear (MKL)": F.linear, "conv1d (oneDNN)": as_conv1d, "conv, channels-last (oneDNN)": as_conv_cl,
              "inner product (oneDNN)": inner_product}
    print(f"{'in -> out':<12}" + "".join(f"{name:>31}" for name in routes) + "   max |diff|")
    for i, o in ((192, 192), (192, 768), (768, 192)):
        x = torch.randn(ROWS // 48, 48, i, requires_grad=True)
        w, b = torch.randn(o, i, requires_grad=True), torch.randn(o, requires_grad=True)
        g = torch.randn(ROWS // 48, 48, o)
        cells = [f"{ms(fn, x, w, b, g):>28.2f} ms" for fn in routes.values()]
        with torch.no_grad():
            ref = F.linear(x, w, b)
            diff = max((fn(x, w, b) - ref).abs().max().item() for fn in routes.values())
        print(f"{f'{i} -> {o}':<12}" + "".join(cells) + f"   {diff:.1e}")


if __name__ == "__main__":
    main()
