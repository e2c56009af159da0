#!/usr/bin/env python3
"""striate's kernels and PyTorch's alternated call batch by call batch in one process: ratios a
noisy VM cannot tilt.

scripts/compare_pytorch.py runs each side in its own minutes, so a spell of the VM (its speed
moved by 1.5-2x within a minute on the Xeons of sessions 26-28, the FMA loop's rate with it or
not) can land on one side only; its kernel rows moved by 0.3 between sittings of the same build.
Here striate's kernels are loaded into this process from a small C-ABI library
(scripts/paired/), and every round times a batch of striate's calls, then the same batch in
PyTorch NCHW and channels-last, then (for "% of peak") the FMA loop of `cargo bench --bench ops
-- machine`, each batch about 50 ms, a short pause between them so that neither side's waiting
threads spin into the other's. The side that goes second finds the machine warmer (an A/A run
of one build read the second batch 2-9% faster), so striate goes first in even rounds and last
in odd ones, and a ratio is the geometric mean of the two orders' median ratios: the bias
cancels, and a batch caught in a spell moves a median little. Each round gives one ratio from neighbouring batches; the table
gives the median ratio over the rounds and its range, and each side's median rate.

Run:  python3 scripts/paired_ratios.py                 (sgemm 2048 and S1-S7, 16 rounds)
      PAIRED_ROUNDS=32 python3 scripts/paired_ratios.py S4 S5   (some workloads, more rounds)
      STRIATE_ISA=avx2 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 \\
          MKL_ENABLE_INSTRUCTIONS=AVX2 python3 scripts/paired_ratios.py   (both capped)
Needs: pip install torch; builds scripts/paired into target/paired (cargo, a few minutes once).
"""

import ctypes
import os
import pathlib
import subprocess
import sys
import time

THREADS = int(os.environ.setdefault("RAYON_NUM_THREADS", "2"))
import torch  # noqa: E402 - after the thread count is in the environment

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from compare_pytorch import CONV_CASES, LAYOUTS, conv_passes, cpu_model  # noqa: E402

torch.set_num_threads(THREADS)
ROOT = pathlib.Path(__file__).resolve().parent.parent
# Even, so that both orders come equally often (see `paired`).
ROUNDS = 2 * ((int(os.environ.get("PAIRED_ROUNDS", "16")) + 1) // 2)
BATCH_SECONDS = 0.05
PAUSE_SECONDS = 0.01
PASSES = {"forward": 0, "backward_data": 1, "backward_filter": 2, "forward in channel blocks": 3}


def load_library():
    target = ROOT / "target/paired"
    subprocess.run(
        ["cargo", "build", "--quiet", "--release", "--manifest-path",
         str(ROOT / "scripts/paired/Cargo.toml"), "--target-dir", str(target)],
        check=True,
    )
    lib = ctypes.CDLL(str(target / "release/libstriate_paired.so"))
    size = ctypes.c_size_t
    lib.striate_paired_fma_peak.restype = ctypes.c_double
    lib.striate_paired_fma_peak.argtypes = [size]
    lib.striate_paired_sgemm.restype = ctypes.c_double
    lib.striate_paired_sgemm.argtypes = [size, size]
    lib.striate_paired_conv.restype = ctypes.c_double
    lib.striate_paired_conv.argtypes = [size] * 11
    return lib


def timed(fn, calls):
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return time.perf_counter() - start


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


def across_orders(values):
    """The geometric mean of the medians of the even and the odd rounds' values."""
    return (median(values[0::2]) * median(values[1::2])) ** 0.5


def paired(striate_seconds, anchors, flops, peak):
    """Rounds of (striate, each anchor, the FMA loop): the median GFLOP/s of each side, the
    per-round ratios striate / best anchor (even rounds striate first, odd rounds last), and
    striate's median rate as a share of the FMA loop's fastest round. `striate_seconds(calls)`
    times `calls` calls itself."""
    striate_seconds(1)
    for fn in anchors.values():
        timed(fn, 1)
    probe = max(striate_seconds(1), 1e-6)
    calls = max(1, round(BATCH_SECONDS / probe))
    rates = {"striate": [], **{name: [] for name in anchors}}
    ratios, peaks = [], []

    def striate_batch():
        rate = flops * calls / striate_seconds(calls) / 1e9
        time.sleep(PAUSE_SECONDS)
        return rate

    for round_index in range(ROUNDS):
        if round_index % 2 == 0:
            striate_rate = striate_batch()
        best = 0.0
        for name, fn in anchors.items():
            rate = flops * calls / timed(fn, calls) / 1e9
            rates[name].append(rate)
            best = max(best, rate)
            time.sleep(PAUSE_SECONDS)
        if round_index % 2 == 1:
            striate_rate = striate_batch()
        rates["striate"].append(striate_rate)
        ratios.append(striate_rate / best)
        peaks.append(peak())
        time.sleep(PAUSE_SECONDS)
    # The ceiling is the loop's fastest round, as `cargo bench --bench ops -- machine` reports
    # its fastest sample: a round's own loop, after the other runtime's batch, read up to a
    # tenth below it.
    share = median(rates["striate"]) / max(peaks) if max(peaks) > 0 else None
    return {name: median(r) for name, r in rates.items()}, ratios, share


def conv_anchors(geometry, pass_name):
    """{anchor: call} of one pass in PyTorch NCHW and channels-last, and its FLOPs. The forward
    on channel blocks meets PyTorch's plain forward (channels-last is its kept layout)."""
    anchors, flops = {}, 0
    for layout_name, layout in LAYOUTS:
        passes, flops = conv_passes(*geometry, layout)
        anchors[f"PyTorch {layout_name}"] = passes[pass_name.replace(" in channel blocks", "")]
    return anchors, flops


def main():
    lib = load_library()
    # About 10 ms of the FMA loop per round (200 M multiply-add lanes per thread at ~3 GHz).
    peak = lambda: lib.striate_paired_fma_peak(2_000_000) / 1e9  # noqa: E731
    cases = {name.split("_")[0]: (name, geometry) for name, *geometry in CONV_CASES}
    which = sys.argv[1:] or ["sgemm", *cases]
    print(f"Paired, {ROUNDS} rounds, {THREADS} threads, {cpu_model()}, torch {torch.__version__}")
    print("| workload | striate GFLOP/s | best anchor GFLOP/s | paired ratio (range) | striate % of the FMA loop's fastest round |")
    print("|---|---|---|---|---|")

    def row(label, rates, ratios, share):
        anchors = {k: v for k, v in rates.items() if k != "striate"}
        best = max(anchors, key=anchors.get)
        share = f"{100 * share:.0f}%" if share else "n/a"
        print(f"| {label} | {rates['striate']:.1f} | {best} {anchors[best]:.1f} | "
              f"{across_orders(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) | {share} |",
              flush=True)

    for item in which:
        if item == "sgemm":
            n = 2048
            a, b = torch.randn(n, n), torch.randn(n, n)
            rates, ratios, share = paired(
                lambda calls: lib.striate_paired_sgemm(n, calls),
                {"MKL via PyTorch": lambda: a @ b}, 2 * n**3, peak)
            row(f"sgemm {n}²", rates, ratios, share)
            continue
        name, geometry = cases[item]
        shape, *rest = geometry
        for pass_name, code in PASSES.items():
            def striate_seconds(calls, code=code):
                return lib.striate_paired_conv(*shape, *rest, code, calls)
            if striate_seconds(1) < 0:
                continue
            anchors, flops = conv_anchors(geometry, pass_name)
            rates, ratios, share = paired(striate_seconds, anchors, flops, peak)
            row(f"{name} {pass_name}", rates, ratios, share)


if __name__ == "__main__":
    main()
