#!/usr/bin/env python3
"""BEATs encoder throughput on this machine, next to the matmul ceiling, as a table.

Measures the machine's matmul GFLOP/s (float32 and bf16), counts the FLOPs of one forward pass of
the released 12-layer BEATs on a 1 s clip (48 patches), and times batched forward passes in float32
and under bf16 autocast, reporting clips/s, the share of the ceiling, and bf16's relative error.

    python bench/beats.py [--batch 16] [--repeats 3] [--device cpu|cuda]
"""

import argparse
import time

import torch

from asc_lib.models.beats import BEATs, released_config


def timed(fn, repeats):
    fn()  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_gflops(dtype, device, n=2048, repeats=3):
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / timed(lambda: a @ b, repeats) / 1e9


def forward_flops(cfg, tokens=48, frames=96):
    """Multiply-adds x 2 of the matmuls in one forward pass on one clip (fbank and softmax left out)."""
    C, F, E, P = cfg.encoder_embed_dim, cfg.encoder_ffn_embed_dim, cfg.embed_dim, cfg.input_patch_size
    patch = tokens * P * P * E
    proj = tokens * E * C
    pos_conv = tokens * C * cfg.conv_pos * C // cfg.conv_pos_groups
    per_layer = 4 * tokens * C * C + 2 * tokens * C * F + 2 * tokens * tokens * C
    return 2 * (patch + proj + pos_conv + cfg.encoder_layers * per_layer)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = BEATs(released_config()).eval().to(device)
    wave = torch.randn(args.batch, 16000, device=device) * 0.1
    fbank = model.preprocess(wave)
    flops = forward_flops(model.cfg)
    rows = []
    with torch.no_grad():
        ref, _ = model.forward_fbank(fbank)
        for name, dtype in (("float32", torch.float32), ("bf16 autocast", torch.bfloat16)):
            ceiling = matmul_gflops(dtype, device)
            if dtype is torch.float32:
                run = lambda: model.forward_fbank(fbank)  # noqa: E731
                err = 0.0
            else:
                def run():
                    with torch.autocast(device.type, dtype=torch.bfloat16):
                        return model.forward_fbank(fbank)
                out = run()[0].float()
                err = ((out - ref).norm() / ref.norm()).item()
            seconds = timed(run, args.repeats)
            clips = args.batch / seconds
            rows.append((name, ceiling, ceiling * 1e9 / flops, clips, clips * flops / 1e9 / ceiling, err))
    threads = torch.get_num_threads() if device.type == "cpu" else "-"
    print(f"BEATs released config ({sum(p.numel() for p in model.parameters()):,} parameters), 1 s clips "
          f"(48 patches), batch {args.batch}, {device}, threads {threads}, {flops / 1e9:.2f} GFLOP per clip")
    print(f"{'precision':<14} {'matmul GFLOP/s':>14} {'ceiling clips/s':>15} {'clips/s':>8} {'of ceiling':>10} {'rel. error':>10}")
    for name, ceiling, cap, clips, share, err in rows:
        print(f"{name:<14} {ceiling:>14.0f} {cap:>15.0f} {clips:>8.1f} {100 * share:>9.0f}% {err:>10.1e}")
    print(f"bf16 / float32 speed: {rows[1][3] / rows[0][3]:.2f}x")


if __name__ == "__main__":
    main()
