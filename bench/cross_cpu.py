#!/usr/bin/env python3
"""Are the book's numbers bit-identical across CPU generations? A fingerprint and a driver.

``--fingerprint`` computes, in one process (2 torch threads, fixed seeds), the steps the chapters are
made of, and prints one SHA-256 per item (of the raw bytes, dtype and shape of its arrays) and a
combined hash: generated clips (numpy), the cache's resampling, the BEATs fbank and the student
log-mel, a tiny BEATs, TF-SepNet and the Quick tour's CNN (forward, backward, a few optimiser steps).
It takes about 10 s natively.

The driver (default) runs the fingerprint in subprocesses, natively and under QEMU user mode with an
AVX2-only Intel CPU model (``qemu-x86_64 -cpu Haswell-noTSX``: AVX2 and FMA, no AVX-512), each with
the pinned kernels of ``asc_lib.kernels`` (what ``import asc_lib`` sets) and unpinned
(``ASC_KERNELS=native``), and prints which items agree with native-pinned. Pinning works if
qemu-pinned agrees everywhere. QEMU is 10-50x slower: a qemu run takes a few minutes.

    apt-get install qemu-user                     # Debian/Ubuntu: QEMU >= 7.2 emulates AVX2
    python bench/cross_cpu.py                     # the four configurations and the table
    python bench/cross_cpu.py --no-qemu --repeats 5   # what pinning costs natively (min/median)
    python bench/cross_cpu.py --configs qemu-pinned --env NPY_DISABLE_CPU_FEATURES=X86_V4
    python bench/cross_cpu.py --fingerprint       # one fingerprint, in this process

Limits: QEMU's TCG computes floats exactly as IEEE-754 says, which AVX2 hardware also does, except
for the approximate instructions (rcpps, rsqrtps), whose bits differ between Intel and AMD parts and
which QEMU computes exactly; and an emulated Haswell says "GenuineIntel", so a library that picks
code by vendor is tested on its Intel path only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ("native-pinned", "native-unpinned", "qemu-pinned", "qemu-unpinned")


# ------------------------------------------------------------------------------------ fingerprint

def fingerprint() -> None:
    """Print ``info``, ``item <name> <sha256> <seconds>`` and ``combined <sha256> <seconds>`` lines."""
    import asc_lib  # first: pins the kernels (unless ASC_KERNELS=native) before torch loads

    import contextlib
    import hashlib
    import io

    import numpy as np
    import torch

    from asc_lib.data import synthetic
    from asc_lib.data.cache import _fit, _resampler
    from asc_lib.features import beats_fbank, student_logmel
    from asc_lib.kernels import kernels_status
    from asc_lib.models.beats import BEATs, BEATsConfig
    from asc_lib.models.tfsepnet import TFSepNet
    from asc_lib.models.tiny import TinyCNN
    from asc_lib.repro import seed_everything
    from asc_lib.train import fit, predict_logits

    from numpy._core._multiarray_umath import __cpu_features__ as npy_features

    print(f"info torch {torch.__version__} capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"info numpy {np.__version__} using {' '.join(k for k, v in npy_features.items() if v and k.startswith(('X86_', 'AVX512_')))}")
    print(f"info kernels {kernels_status()}")
    seed_everything(0, threads=2)
    combined, start = hashlib.sha256(), time.perf_counter()

    def item(name, *arrays):
        h = hashlib.sha256()
        for a in arrays:
            a = a.detach().cpu().contiguous().numpy() if isinstance(a, torch.Tensor) else np.ascontiguousarray(a)
            h.update(f"{a.dtype}{a.shape}".encode())
            h.update(a.tobytes())
        combined.update(h.digest())
        print(f"item {name} {h.hexdigest()} {time.perf_counter() - item.t:.2f}", flush=True)
        item.t = time.perf_counter()

    item.t = start

    def train_steps(model, forward, loss_fn, opt, steps):
        """``loss_fn(forward())`` forward and backward once (reported), then ``steps`` optimiser
        steps, in train mode (dropout on); returns (first output, first gradients, final weights)."""
        model.train()
        out = forward()
        loss_fn(out).backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        for _ in range(steps):
            opt.step()
            opt.zero_grad()
            loss_fn(forward()).backward()
        return out, grads, [p.detach() for p in model.parameters()]

    # (a) generated clips: numpy float64 maths (sin, exp, FFT) rounded to float32 at the end
    clips = np.stack([synthetic.scene_clip(s, d, seed=[0, i]) for i, (s, d) in
                      enumerate([("bus", "a"), ("park", "s1"), ("street_traffic", "c")])])
    item("synthetic.scene_clip", clips)
    rng = np.random.default_rng(1)
    mix = synthetic.location_mix("tram", "vienna", 3, 7)
    item("synthetic.render_f64", synthetic.render(mix, "vienna", rng, 32000, 1.0))  # complex128, unrounded

    # (b) the cache's resampling: 44.1 kHz -> 32 kHz (student) and 16 kHz (BEATs), as waveform_cache
    wav44 = torch.from_numpy(synthetic.scene_clip("metro", "b", seed=[0, 9], sr=44100))[None]
    w32 = _fit(_resampler(44100, 32000)(wav44), 32000)
    w16 = _fit(_resampler(44100, 16000)(wav44), 16000)
    item("resample.44k_to_32k_16k", w32, w16)

    # (c) features
    fbank = beats_fbank(torch.cat([w16, w16.flip(-1)]))  # (2, 98, 128)
    item("features.beats_fbank", fbank)
    item("features.student_logmel", student_logmel(torch.from_numpy(clips), n_mels=256))

    # (d) a tiny BEATs (every feature of the released config, 2 layers of width 64): 5 AdamW steps
    torch.manual_seed(1)
    cfg = BEATsConfig(input_patch_size=16, embed_dim=64, encoder_layers=2, encoder_embed_dim=64,
                      encoder_ffn_embed_dim=128, encoder_attention_heads=4, layer_wise_gradient_decay_ratio=0.6,
                      deep_norm=True, conv_pos=16, conv_pos_groups=4, relative_position_embedding=True,
                      num_buckets=32, max_distance=64, gru_rel_pos=True, finetuned_model=True, predictor_class=10)
    beats = BEATs(cfg)
    opt = torch.optim.AdamW(beats.parameters(), lr=1e-3, weight_decay=0.01)
    target = torch.zeros(2, 10)
    target[0, 1] = target[1, 4] = 1.0
    out, grads, params = train_steps(beats, lambda: beats.forward_fbank(fbank)[0],  # (2, 10) probabilities
                                     lambda o: torch.nn.functional.binary_cross_entropy(o, target), opt, 5)
    item("beats.forward", out)
    item("beats.backward", *grads)
    item("beats.adamw_5_steps", *params)

    # (e) TF-SepNet (the paper's student, full width) on a (4, 1, 64, 33) batch: 5 Adam steps
    torch.manual_seed(2)
    net = TFSepNet(n_classes=10)
    x = torch.randn(4, 1, 64, 33)
    y = torch.tensor([0, 3, 5, 9])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    out, grads, params = train_steps(net, lambda: net(x), lambda o: torch.nn.functional.cross_entropy(o, y), opt, 5)
    item("tfsepnet.forward", out)
    item("tfsepnet.backward", *grads)
    item("tfsepnet.adam_5_steps", *params)

    # (f) the Quick tour in small: tour clips, log-mels, TinyCNN trained with fit(), test logits
    waves, scenes, _, is_train = synthetic.tour_clips(2, ("a", "b"), sr=32000, seed=0)
    feats = student_logmel(torch.from_numpy(waves), n_mels=256).unsqueeze(1)
    torch.manual_seed(3)
    model = TinyCNN(n_classes=10)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        fit(model, feats[is_train], torch.from_numpy(scenes[is_train]), epochs=3, batch_size=4, lr=3e-3,
            device="cpu", generator=torch.Generator().manual_seed(0))
    logits = predict_logits(model, int((~is_train).sum()), lambda idx: feats[~is_train][idx], device="cpu")
    item("tiny_cnn.fit_3_epochs", *[p.detach() for p in model.parameters()], logits)

    print(f"combined {combined.hexdigest()} {time.perf_counter() - start:.2f}")


# ----------------------------------------------------------------------------------------- driver

def child_env(pinned: bool, extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without any pinning variable, so that the child's ``import asc_lib``
    does the pinning (what is tested), or ``ASC_KERNELS=native``; then ``extra``."""
    sys.path.insert(0, str(ROOT))
    from asc_lib.kernels import PINNED_ENV

    env = {k: v for k, v in os.environ.items() if k not in PINNED_ENV and k != "ASC_KERNELS"}
    if not pinned:
        env["ASC_KERNELS"] = "native"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return {**env, **extra}


def run_fingerprint(config: str, qemu_cpu: str, extra: dict[str, str], timeout: float) -> dict:
    """Run ``--fingerprint`` in a subprocess: {"items": {name: sha}, "info": [...], "seconds": compute
    time, "wall": process time} or {"error": why}."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--fingerprint"]
    if config.startswith("qemu"):
        cmd = ["qemu-x86_64", "-cpu", qemu_cpu] + cmd
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=child_env(config.endswith("-pinned"), extra), cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - start
    out = {"items": {}, "info": [], "wall": wall, "item_seconds": {}}
    for line in proc.stdout.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "info":
            out["info"].append(rest)
        elif kind == "item":
            name, sha, sec = rest.split()
            out["items"][name], out["item_seconds"][name] = sha, float(sec)
        elif kind == "combined":
            out["combined"], sec = rest.split()
            out["seconds"] = float(sec)
    if proc.returncode or "combined" not in out:
        tail = [l for l in proc.stderr.splitlines() if "TCG doesn't support" not in l][-15:]
        return {"error": f"exit status {proc.returncode}:\n  " + "\n  ".join(tail)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fingerprint", action="store_true", help="compute and print one fingerprint, here")
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--no-qemu", action="store_true", help="only the native configurations")
    parser.add_argument("--qemu-cpu", default="Haswell-noTSX", help="QEMU CPU model (default: Haswell-noTSX)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment variable for every run (repeatable)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each native configuration (timing)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds allowed per run")
    args = parser.parse_args()
    if args.fingerprint:
        return fingerprint()

    extra = dict(kv.split("=", 1) for kv in args.env)
    configs = [c for c in args.configs if not (args.no_qemu and c.startswith("qemu"))]
    if any(c.startswith("qemu") for c in configs) and not shutil.which("qemu-x86_64"):
        print("qemu-x86_64 not found (apt-get install qemu-user): the qemu configurations are skipped")
        configs = [c for c in configs if not c.startswith("qemu")]
    print(f"python {sys.executable}; machine: {os.cpu_count()} CPUs; qemu CPU model {args.qemu_cpu}; "
          f"extra env {extra or 'none'}")

    results, times = {}, {c: [] for c in configs}
    for rep in range(args.repeats):  # alternate the configurations, so that a busy spell hits both
        for c in configs:
            if rep and c.startswith("qemu"):
                continue
            r = run_fingerprint(c, args.qemu_cpu, extra, args.timeout)
            if "error" in r:
                print(f"{c}: {r['error']}")
                continue
            results.setdefault(c, r)
            times[c].append((r["seconds"], r["wall"]))
            print(f"{c} run {rep + 1}: {r['seconds']:.1f} s computing, {r['wall']:.1f} s in all", flush=True)
    if not results:
        sys.exit("no configuration ran")

    ref_name = "native-pinned" if "native-pinned" in results else next(iter(results))
    ref, cols = results[ref_name], list(results)
    width = max(len(c) for c in cols) + 2
    print(f"\n{'':<26}" + "".join(f"{c:>{width}}" for c in cols))
    for c in cols:
        print(f"  {c}: " + "; ".join(results[c]["info"]))
    print(f"\nsame bits as {ref_name}? (= same, DIFF not)")
    for name in ref["items"]:
        cells = ["=" if results[c]["items"].get(name) == ref["items"][name] else "DIFF" for c in cols]
        print(f"{name:<26}" + "".join(f"{x:>{width}}" for x in cells))
    print(f"{'combined':<26}" + "".join(f"{'=' if results[c]['combined'] == ref['combined'] else 'DIFF':>{width}}"
                                         for c in cols))
    print(f"\n{'seconds (min / median)':<26}" + "".join(f"{c:>{width}}" for c in cols))
    for label, k in (("computing", 0), ("process", 1)):
        print(f"{label:<26}" + "".join(f"{min(t[k] for t in times[c]):>{width // 2}.1f}/"
                                       f"{statistics.median(t[k] for t in times[c]):<{width - width // 2 - 1}.1f}"
                                       for c in cols))
    print(f"{'runs':<26}" + "".join(f"{len(times[c]):>{width}}" for c in cols))


if __name__ == "__main__":
    main()
