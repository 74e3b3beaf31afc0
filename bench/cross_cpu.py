#!/usr/bin/env python3
"""Are the book's numbers bit-identical across CPUs? A fingerprint, and a driver that compares them.

``--fingerprint`` computes, in one process (2 torch threads, fixed seeds), the steps the chapters are
made of and prints one SHA-256 per item (of the dtype, shape and raw bytes of its arrays) and a
combined hash: (a) generated clips (numpy float64), (b) the cache's resampling, (c) the BEATs fbank
and the student log-mel, (d) a tiny BEATs and the ci teachers' BEATs at its real size, (e) TF-SepNet,
(f) the Quick tour's CNN (forward, backward, a few optimiser steps). Single library primitives come
first (among them BEATs' Linear layers at the ci sizes): they say where a difference comes from and are
left out of the combined hash. About 2 s natively on an idle 2-core machine.

The driver (default) runs the fingerprint in subprocesses: natively, and under QEMU user mode with
CPU models that have AVX2 but no AVX-512 (default: ``Haswell-noTSX``, an Intel part, and
``EPYC-Rome``, an AMD one), each pinned (the child's ``import asc_lib`` sets ``PINNED_ENV``) and
unpinned (``ASC_KERNELS=native``). It prints, per item, a letter per configuration: ``A`` is the bits
native-pinned gives, another letter other bits. Pinning works where every pinned column says ``A``.
A qemu run took 1-3 minutes before BEATs' Linear layers ran as channels-last convolutions, which QEMU
runs far slower: the teacher and pre-training items alone took more than 1,500 s under Haswell-noTSX, so
give ``--timeout 4000``.

    apt-get install qemu-user                       # Debian bookworm: QEMU 7.2, which emulates AVX2
    python bench/cross_cpu.py                       # all configurations, then the table
    python bench/cross_cpu.py --no-qemu --repeats 5 # what pinning costs natively (min/median seconds)
    python bench/cross_cpu.py --pinning pinned --qemu-cpu Haswell-noTSX --env MKL_CBWR=AUTO
    python bench/cross_cpu.py --fingerprint         # one fingerprint, in this process
    python bench/cross_cpu.py --chapter 01_quick_tour --qemu-cpu Haswell-noTSX --timeout 3600

``--chapter NAME`` checks a whole chapter instead: nbval re-executes ``book/NAME.ipynb`` (as the README's
test command does) with its Jupyter kernel started under ``qemu-x86_64 -cpu MODEL`` (or natively with
``--no-qemu``), pinned, and compares every checked cell with the published output. The Quick tour took
21 s natively and 963 s under QEMU's Haswell-noTSX (``--timeout`` is per cell there: give it an hour).
``--env`` applies to the kernel too.

What QEMU cannot show: it computes IEEE operations exactly as hardware does, but the approximate
instructions rcpps and rsqrtps exactly (hardware: 12-bit estimates, Intel's and AMD's differ), so a
kernel that uses them (MKL's float32 sqrt: torch.sqrt, pow(x, 0.5), Adam unless fused) cannot be
checked this way: its qemu bits match no real CPU. An emulated CPU also has QEMU's cache sizes and
vendor string, and none of a real part's microcode: agreement under QEMU is strong evidence, not
proof, for a real AVX2-only machine. And QEMU 7.2 mis-emulates something in numpy's AVX2 SIMD argsort
(x86-simd-sort): under Haswell-noTSX, ``np.argsort`` of 5,000 normal floats returned a permutation that
does not sort them (the stable kind, and argsort with numpy's AVX2 dispatch off, were right). pandas'
groupby goes through it, so the Results chapter fails under QEMU for QEMU's sake; with
``--env "NPY_DISABLE_CPU_FEATURES=AVX2 FMA3 X86_V3 X86_V4 AVX512_ICL AVX512_SPR"`` it printed the
published outputs there.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import string
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QEMU_CPUS = ("Haswell-noTSX", "EPYC-Rome")


# ------------------------------------------------------------------------------------ fingerprint

def fingerprint() -> None:
    """Print ``info`` lines, ``item <name> <sha256> <seconds since the previous item>`` lines and
    ``combined <sha256> <seconds in all>``."""
    import asc_lib  # first: pins the kernels (unless ASC_KERNELS=native) before torch loads

    import contextlib
    import hashlib
    import io

    import numpy as np
    import torch

    from asc_lib.augment import mix_freq_stats
    from asc_lib.data import synthetic
    from asc_lib.data.cache import _fit, _resampler
    from asc_lib.features import beats_fbank, student_logmel
    from asc_lib.kernels import kernels_status
    from asc_lib.models.beats import BEATs, BEATsConfig, Linear
    from asc_lib.models.tfsepnet import TFSepNet
    from asc_lib.models.tiny import TinyCNN
    from asc_lib.repro import seed_everything
    from asc_lib.pretrain import MaskedPatchModel, small_config
    from asc_lib.teachers import TokenClassifier
    from asc_lib.train import fit, predict_logits

    from numpy._core._multiarray_umath import __cpu_features__ as npy_features

    print(f"info torch {torch.__version__} capability {torch.backends.cpu.get_cpu_capability()}")
    targets = [k for k, on in npy_features.items() if on and k.startswith(("X86_", "AVX512_"))]
    print(f"info numpy {np.__version__} using {' '.join(targets)}")
    print(f"info kernels {kernels_status()}")
    seed_everything(0, threads=2)
    combined, start = hashlib.sha256(), time.perf_counter()

    def item(name, *arrays, primitive=False):
        """Print the hash of ``arrays``; the combined hash covers the book's steps, not the primitives."""
        h = hashlib.sha256()
        for a in arrays:
            a = a.detach().cpu().contiguous().numpy() if isinstance(a, torch.Tensor) else np.ascontiguousarray(a)
            h.update(f"{a.dtype}{a.shape}".encode())
            h.update(a.tobytes())
        if not primitive:
            combined.update(h.digest())
        print(f"item {name.replace(' ', '_')} {h.hexdigest()} {time.perf_counter() - item.t:.2f}", flush=True)
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

    # (0) single library primitives first: they say which library differs when a step below does
    rng = np.random.default_rng(0)
    x64 = rng.uniform(0.001, 50, 50_000)
    item("numpy.exp_log_f64", np.exp(x64 / 10), np.log(x64), np.log2(x64), 10 ** (x64 / 20),
         primitive=True)  # SVML kernels on AVX-512 CPUs
    torch.manual_seed(0)
    x = torch.randn(4, 16000)
    item("torch.fft (MKL DFT)", torch.fft.rfft(x[:, :4096]), torch.fft.rfft(x.reshape(-1, 512)), primitive=True)
    item("torch.log_exp (MKL VML)", torch.log(x.abs() + 1e-3), torch.exp(x), primitive=True)
    item("torch.sqrt (MKL VML)", torch.sqrt(x.abs()), primitive=True)  # uses rsqrtps: differs under QEMU
    item("torch.pow_0.5 (MKL VML)", x.abs().pow(0.5), primitive=True)  # torch turns pow(x, 0.5) into sqrt
    item("torch.rsqrt (ATen)", torch.rsqrt(x.abs() + 1e-3), primitive=True)  # 1 / IEEE sqrt, no MKL
    item("torch.matmul (MKL sgemm)", torch.randn(256, 513) @ torch.randn(513, 65), primitive=True)
    xc = torch.randn(4, 32, 32, 17, requires_grad=True)
    wc = torch.randn(64, 32, 3, 3, requires_grad=True)
    yc = torch.nn.functional.conv2d(xc, wc, padding=1)
    yc.square().sum().backward()
    item("torch.conv2d (oneDNN)", yc, xc.grad, wc.grad, primitive=True)
    for rows, n_in, n_out in [(1536, 192, 768), (3072, 768, 192), (768, 192, 1024)]:  # the ci BEATs' sizes
        lin = Linear(n_in, n_out)
        xl = torch.randn(rows, n_in, requires_grad=True)
        yl = lin(xl)
        yl.square().sum().backward()
        item(f"beats.Linear_{rows}x{n_in}x{n_out}", yl, xl.grad, lin.weight.grad,
             lin.bias.grad, primitive=True)
    item("torch.softmax_gelu (ATen)", torch.softmax(x.view(-1, 100), -1), torch.nn.functional.gelu(x),
         primitive=True)
    p = torch.nn.Parameter(torch.randn(1000))
    opt = torch.optim.Adam([p], lr=1e-2, fused=True)  # its sqrt is ATen's vectorised one, not MKL's
    for _ in range(5):
        p.grad = torch.sin(p.detach() * 3)
        opt.step()
    item("torch.adam_fused (ATen)", p, primitive=True)

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
    opt = torch.optim.AdamW(beats.parameters(), lr=1e-3, weight_decay=0.01, fused=True)  # as asc_lib.pretrain
    target = torch.zeros(2, 10)
    target[0, 1] = target[1, 4] = 1.0
    out, grads, params = train_steps(beats, lambda: beats.forward_fbank(fbank)[0],  # (2, 10) probabilities
                                     lambda o: torch.nn.functional.binary_cross_entropy(o, target), opt, 5)
    item("beats.forward", out)
    item("beats.backward", *grads)
    item("beats.adamw_5_steps", *params)

    # (d2) the ci teachers' BEATs at its size (4 layers of width 192, a batch of 32 clips): 2 AdamW
    # steps of a TokenClassifier, then eval logits of a batch of 64 (as a teacher scores)
    torch.manual_seed(4)
    teacher = TokenClassifier(BEATs(small_config()))
    opt = torch.optim.AdamW(teacher.parameters(), lr=5e-4, weight_decay=0.01, fused=True)
    xt = torch.randn(64, 98, 128)
    yt = torch.arange(32) % 10
    out, grads, params = train_steps(teacher, lambda: teacher(xt[:32]),
                                     lambda o: torch.nn.functional.cross_entropy(o, yt), opt, 2)
    teacher.eval()
    with torch.no_grad():
        scored = teacher(xt)
    item("teacher.train_2_steps_and_score", out, *grads, *params, scored)

    # (d3) masked-patch pre-training at the ci size (the BEATs chapter's step, its predictor's
    # PreNormLayers included): 2 AdamW steps on 16 clips, a fixed mask
    torch.manual_seed(5)
    mpm = MaskedPatchModel(BEATs(small_config()))
    opt = torch.optim.AdamW(mpm.parameters(), lr=1e-3, weight_decay=0.01, fused=True)
    mask = MaskedPatchModel.sample_mask(16, 48, 0.75, torch.Generator().manual_seed(0))
    out, grads, params = train_steps(mpm, lambda: mpm(xt[:16], mask=mask)[0], lambda o: o, opt, 2)
    item("pretrain.masked_2_steps", out, *grads, *params)

    # (e) TF-SepNet (the paper's student, full width) on a (4, 1, 64, 33) batch: 5 Adam steps; Freq-MixStyle
    torch.manual_seed(2)
    net = TFSepNet(n_classes=10)
    x = torch.randn(4, 1, 64, 33)
    y = torch.tensor([0, 3, 5, 9])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True)  # as asc_lib.train.train
    out, grads, params = train_steps(net, lambda: net(x), lambda o: torch.nn.functional.cross_entropy(o, y), opt, 5)
    item("tfsepnet.forward", out)
    item("tfsepnet.backward", *grads)
    item("tfsepnet.adam_5_steps", *params)
    logmel = student_logmel(torch.from_numpy(clips), n_mels=256).unsqueeze(1)  # (3, 1, 256, 64)
    item("augment.mix_freq_stats", mix_freq_stats(logmel, 0.3, torch.tensor([2, 0, 1])))  # Freq-MixStyle

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
    does the pinning (what is tested), or with ``ASC_KERNELS=native``; then ``extra``."""
    sys.path.insert(0, str(ROOT))
    from asc_lib.kernels import PINNED_ENV

    env = {k: v for k, v in os.environ.items() if k not in PINNED_ENV and k != "ASC_KERNELS"}
    if not pinned:
        env["ASC_KERNELS"] = "native"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return {**env, **extra}


def run_fingerprint(cpu: str | None, pinned: bool, extra: dict[str, str], timeout: float) -> dict:
    """Run ``--fingerprint`` in a subprocess, natively (``cpu=None``) or under ``qemu-x86_64 -cpu
    cpu``: {"items": {name: sha256}, "info": [...], "combined", "seconds" (computing), "wall"
    (the whole process)}, or {"error": why}."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--fingerprint"]
    if cpu:
        cmd = ["qemu-x86_64", "-cpu", cpu] + cmd
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=child_env(pinned, extra), cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    out = {"items": {}, "item_seconds": {}, "info": [], "wall": time.perf_counter() - start}
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
        tail = [line for line in proc.stderr.splitlines() if "TCG doesn't support" not in line][-15:]
        return {"error": f"exit status {proc.returncode}:\n  " + "\n  ".join(tail)}
    return out


def run_chapter(name: str, cpu: str | None, extra: dict[str, str], timeout: float) -> int:
    """nbval over ``book/<name>.ipynb`` with its kernel under ``qemu-x86_64 -cpu cpu`` (natively if
    ``cpu`` is None), pinned as ``tasks.py`` pins, then ``extra``; returns pytest's exit status."""
    import json
    import tempfile

    sys.path.insert(0, str(ROOT))
    from asc_lib.kernels import PINNED_ENV

    with tempfile.TemporaryDirectory() as jupyter_path:
        spec = Path(jupyter_path) / "kernels" / "asc-cpu"
        spec.mkdir(parents=True)
        launch = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        (spec / "kernel.json").write_text(json.dumps({
            "argv": (["qemu-x86_64", "-cpu", cpu] if cpu else []) + launch,
            "display_name": f"python on {cpu or 'this CPU'}", "language": "python"}))
        env = {**child_env(True, {}), **PINNED_ENV, **extra, "JUPYTER_PATH": jupyter_path}
        cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "addopts=", "-ra", "--nbval-lax",
               "--nbval-sanitize-with", "tests/nbval_sanitize.cfg", "--nbval-kernel-name", "asc-cpu",
               f"--nbval-cell-timeout={timeout:.0f}", f"--nbval-kernel-startup-timeout={timeout:.0f}",
               f"book/{name}.ipynb"]
        print(f"{name} on {cpu or 'this CPU'} (pinned): {' '.join(cmd[2:])}", flush=True)
        start = time.perf_counter()
        code = subprocess.run(cmd, env=env, cwd=ROOT).returncode
        print(f"{name} on {cpu or 'this CPU'}: {'the published outputs' if code == 0 else 'FAILED'}, "
              f"{time.perf_counter() - start:.0f} s", flush=True)
        return code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fingerprint", action="store_true", help="compute and print one fingerprint, here")
    parser.add_argument("--qemu-cpu", nargs="+", default=list(QEMU_CPUS), metavar="MODEL",
                        help=f"QEMU CPU models (default: {' '.join(QEMU_CPUS)}; see qemu-x86_64 -cpu help)")
    parser.add_argument("--no-qemu", action="store_true", help="only the native configurations")
    parser.add_argument("--no-native", action="store_true", help="only the qemu configurations")
    parser.add_argument("--pinning", choices=("both", "pinned", "unpinned"), default="both")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment variable for every run (repeatable; wins over PINNED_ENV)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each native configuration (timing)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed per run (per cell with --chapter)")
    parser.add_argument("--chapter", metavar="NAME", help="re-execute book/NAME.ipynb under each --qemu-cpu (see above)")
    args = parser.parse_args()
    if args.fingerprint:
        return fingerprint()
    extra = dict(kv.split("=", 1) for kv in args.env)
    if args.chapter:
        sys.exit(max(run_chapter(args.chapter, cpu, extra, args.timeout)
                     for cpu in ([None] if args.no_qemu else args.qemu_cpu)))
    cpus = [] if args.no_qemu else list(args.qemu_cpu)
    if cpus and not shutil.which("qemu-x86_64"):
        print("qemu-x86_64 not found (apt-get install qemu-user): the qemu configurations are skipped")
        cpus = []
    pinnings = {"both": (True, False), "pinned": (True,), "unpinned": (False,)}[args.pinning]
    configs = [(cpu, pin) for cpu in ([] if args.no_native else [None]) + cpus for pin in pinnings]
    name = {c: f"{c[0] or 'native'}/{'pinned' if c[1] else 'unpinned'}" for c in configs}
    print(f"python {sys.executable}; {os.cpu_count()} CPUs; extra env: {extra or 'none'}")

    results, times = {}, {c: [] for c in configs}
    for rep in range(args.repeats):  # native runs alternate, so that a busy spell hits both
        for c in configs:
            if rep and c[0]:
                continue  # one run per qemu configuration
            r = run_fingerprint(c[0], c[1], extra, args.timeout)
            if "error" in r:
                print(f"{name[c]}: {r['error']}")
                continue
            results.setdefault(c, r)
            times[c].append((r["seconds"], r["wall"], r["item_seconds"]))
            print(f"{name[c]} run {rep + 1}: {r['seconds']:.1f} s computing, {r['wall']:.1f} s in all", flush=True)
    if not results:
        sys.exit("no configuration ran")

    cols = list(results)
    for c in cols:
        print(f"  {name[c]}: " + "; ".join(results[c]["info"]))
    width = max(len(name[c]) for c in cols) + 2
    rows = [(item, [results[c]["items"].get(item) for c in cols]) for item in results[cols[0]]["items"]]
    first = max(28, *(len(item) + 2 for item, _ in rows))  # the label column
    print(f"\nA = the bits of {name[cols[0]]}; B, C, ...: other bits (the same letter, the same bits)")
    print(f"{'':<{first}}" + "".join(f"{name[c]:>{width}}" for c in cols))
    for label, shas in rows + [("combined", [results[c]["combined"] for c in cols])]:
        letters = {}
        for sha in shas:
            letters.setdefault(sha, string.ascii_uppercase[len(letters)])
        print(f"{label:<{first}}" + "".join(f"{letters[sha]:>{width}}" for sha in shas))
    print(f"\n{'seconds: min / median':<{first}}" + "".join(f"{name[c]:>{width}}" for c in cols))
    for label, k in (("computing", 0), ("whole process", 1)):
        cells = [f"{min(t[k] for t in times[c]):.1f} / {statistics.median(t[k] for t in times[c]):.1f}" for c in cols]
        print(f"{label:<{first}}" + "".join(f"{cell:>{width}}" for cell in cells))
    print(f"{'runs':<{first}}" + "".join(f"{len(times[c]):>{width}}" for c in cols))
    if args.repeats > 1:  # where the time goes (a model's forward item holds its whole training)
        print(f"\n{'seconds per item: min':<{first}}" + "".join(f"{name[c]:>{width}}" for c in cols))
        for item, _ in rows:
            cells = [f"{min(t[2].get(item, float('nan')) for t in times[c]):.2f}" for c in cols]
            print(f"{item:<{first}}" + "".join(f"{cell:>{width}}" for cell in cells))


if __name__ == "__main__":
    main()
