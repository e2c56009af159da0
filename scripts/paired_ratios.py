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
gives the median ratio over the rounds and its range, each side's median rate, and the largest
share of a CPU's time the hypervisor gave to other guests while the row ran ("steal", from
/proc/stat): a vCPU that loses time slows a kernel that splits its work evenly over the threads
more than one that balances it, so a row with steal may tilt.

The model rows (the MNIST CNN's step and inference, ResNet-18's) pair striate's
`benches/train_step.rs` workloads with `compare_pytorch.py`'s PyTorch, torch.compile and ONNX
Runtime calls the same way, a batch being a few calls (one ResNet-18 step).

Run:  python3 scripts/paired_ratios.py        (the models, sgemm 2048 and S1-S7, 16 rounds)
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
from compare_pytorch import (  # noqa: E402
    CONV_CASES, LAYOUTS, conv_passes, cpu_model, mnist_workloads, resnet18_workloads)

torch.set_num_threads(THREADS)
ROOT = pathlib.Path(__file__).resolve().parent.parent
# Even, so that both orders come equally often (see `paired`).
ROUNDS = 2 * ((int(os.environ.get("PAIRED_ROUNDS", "16")) + 1) // 2)
BATCH_SECONDS = 0.05
PAUSE_SECONDS = 0.01
# ONNX Runtime's pool spins for more than 10 ms after a run: striate's MNIST inference 10 ms
# after it ran at 16-20k images/s, 50-500 ms after it at 25-37k (PyTorch's OpenMP threads are
# quiet within 10 ms).
PAUSE_AFTER = {"ONNX Runtime": 0.1}
PASSES = {"forward": 0, "backward_data": 1, "backward_filter": 2, "forward in channel blocks": 3}


def load_library():
    target = ROOT / "target/paired"
    subprocess.run(
        ["cargo", "build", "--quiet", "--release", "--manifest-path",
         str(ROOT / "scripts/paired/Cargo.toml"), "--target-dir", str(target)],
        check=True,
    )
    return open_library(target / "release/libstriate_paired.so")


def open_library(path):
    """scripts/paired's library at `path`, its functions' C types declared."""
    lib = ctypes.CDLL(str(path))
    size = ctypes.c_size_t
    lib.striate_paired_fma_peak.restype = ctypes.c_double
    lib.striate_paired_fma_peak.argtypes = [size]
    lib.striate_paired_sgemm.restype = ctypes.c_double
    lib.striate_paired_sgemm.argtypes = [size, size]
    lib.striate_paired_conv.restype = ctypes.c_double
    lib.striate_paired_conv.argtypes = [size] * 11
    lib.striate_paired_model.restype = ctypes.c_double
    lib.striate_paired_model.argtypes = [size] * 3
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


def run_or_drop(anchors, name, fn, calls):
    """Seconds of `calls` calls of anchor `name`, or None after dropping it from `anchors` with
    a note if it raised: one anchor's failure (torch.compile's code has failed under an
    instruction-set cap) must not lose the other rows."""
    try:
        return timed(fn, calls)
    except Exception as error:  # noqa: BLE001
        print(f"note: {name} left out ({type(error).__name__}: {str(error)[:120]})", flush=True)
        del anchors[name]
        return None


def paired(striate_seconds, anchors, work, peak):
    """Rounds of (striate, each anchor, the FMA loop unless `peak` is None): the median rate
    (`work` per call, per second) of each side, the per-round ratios striate / best anchor
    (even rounds striate first, odd rounds last), and striate's median rate as a share of the
    FMA loop's fastest round (GFLOP/s: `work` in GFLOP); None if every anchor failed.
    `striate_seconds(calls)` times `calls` calls itself."""
    anchors = dict(anchors)
    striate_seconds(1)
    for name, fn in list(anchors.items()):
        run_or_drop(anchors, name, fn, 1)
    probe = max(striate_seconds(1), 1e-6)
    calls = max(1, round(BATCH_SECONDS / probe))
    rates = {"striate": [], **{name: [] for name in anchors}}
    peaks = []

    def striate_batch():
        rate = work * calls / striate_seconds(calls)
        time.sleep(PAUSE_SECONDS)
        return rate

    for round_index in range(ROUNDS):
        if round_index % 2 == 0:
            striate_rate = striate_batch()
        for name, fn in list(anchors.items()):
            seconds = run_or_drop(anchors, name, fn, calls)
            if seconds is None:
                del rates[name]
                continue
            rates[name].append(work * calls / seconds)
            time.sleep(PAUSE_AFTER.get(name, PAUSE_SECONDS))
        if round_index % 2 == 1:
            striate_rate = striate_batch()
        rates["striate"].append(striate_rate)
        if peak is not None:
            peaks.append(peak())
            time.sleep(PAUSE_SECONDS)
    if not anchors:
        return None
    ratios = [rate / max(rates[name][i] for name in anchors)
              for i, rate in enumerate(rates["striate"])]
    # The ceiling is the loop's fastest round, as `cargo bench --bench ops -- machine` reports
    # its fastest sample: a round's own loop, after the other runtime's batch, read up to a
    # tenth below it.
    share = median(rates["striate"]) / max(peaks) if peaks and max(peaks) > 0 else None
    return {name: median(r) for name, r in rates.items()}, ratios, share


def conv_anchors(geometry, pass_name):
    """{anchor: call} of one pass in PyTorch NCHW and channels-last, and its FLOPs. The forward
    on channel blocks meets PyTorch's plain forward (channels-last is its kept layout)."""
    anchors, flops = {}, 0
    for layout_name, layout in LAYOUTS:
        passes, flops = conv_passes(*geometry, layout)
        anchors[f"PyTorch {layout_name}"] = passes[pass_name.replace(" in channel blocks", "")]
    return anchors, flops


# Model workloads: (library index, title, PyTorch's calls) and, per pass, (library code, label,
# work per call, unit): a step's rate is steps per second, shown as milliseconds.
MODELS = {
    "mnist": (0, "MNIST CNN", mnist_workloads,
              {"step": (0, "SGD step, batch 64", 1, "ms"),
               "inference": (1, "inference, batch 256", 256, "img/s")}),
    "resnet18": (1, "ResNet-18", resnet18_workloads,
                 {"step": (0, "SGD step, batch 8", 1, "ms"),
                  "inference": (1, "inference, 1 image", 1, "ms")}),
}


def cpu_ticks():
    """Each CPU's (steal, total) jiffies from /proc/stat: Linux only, {} elsewhere."""
    try:
        lines = pathlib.Path("/proc/stat").read_text().splitlines()
    except OSError:
        return {}
    ticks = {}
    for line in lines:
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            values = [int(v) for v in values]
            ticks[name] = (values[7] if len(values) > 7 else 0, sum(values))
    return ticks


def steal_since(before):
    """The largest share of any CPU's time the hypervisor gave to other guests since `before`
    ("n/a" without /proc/stat). A vCPU losing time slows a kernel that splits its work evenly
    more than one that balances it, so a row measured in such a burst may tilt."""
    after = cpu_ticks()
    shares = [(after[c][0] - s) / max(after[c][1] - t, 1) for c, (s, t) in before.items()
              if c in after]
    return f"{100 * max(shares):.1f}%" if shares else "n/a"


def main():
    lib = load_library()
    # About 10 ms of the FMA loop per round (200 M multiply-add lanes per thread at ~3 GHz).
    peak = lambda: lib.striate_paired_fma_peak(2_000_000) / 1e9  # noqa: E731
    cases = {name.split("_")[0]: (name, geometry) for name, *geometry in CONV_CASES}
    which = sys.argv[1:] or [*MODELS, "sgemm", *cases]
    print(f"Paired, {ROUNDS} rounds, {THREADS} threads, {cpu_model()}, torch {torch.__version__}")
    print("| workload | striate | best anchor | paired ratio (range; >1: striate ahead) | striate % of the FMA loop's fastest round | steal |")
    print("|---|---|---|---|---|---|")
    since = cpu_ticks()

    def row(label, rates, ratios, share, unit="GFLOP/s"):
        anchors = {k: v for k, v in rates.items() if k != "striate"}
        best = max(anchors, key=anchors.get)
        show = (lambda rate: f"{1e3 / rate:.2f} ms") if unit == "ms" else (
            lambda rate: f"{rate:.1f} {unit}")
        share = f"{100 * share:.0f}%" if share else "n/a"
        nonlocal since
        print(f"| {label} | {show(rates['striate'])} | {best} {show(anchors[best])} | "
              f"{across_orders(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) | {share} | "
              f"{steal_since(since)} |", flush=True)
        since = cpu_ticks()

    for item in which:
        if item in MODELS:
            index, title, workloads, passes = MODELS[item]
            calls = workloads()
            if "STRIATE_ISA" in os.environ:
                # No variable caps ONNX Runtime: capped rows compare with PyTorch (capped)
                # alone, as compare_pytorch.py's do.
                calls["inference"].pop("ONNX Runtime", None)
            for pass_name, (code, label, work, unit) in passes.items():
                if not calls[pass_name]:
                    continue
                def striate_seconds(n, index=index, code=code):
                    return lib.striate_paired_model(index, code, n)
                result = paired(striate_seconds, calls[pass_name], work, None)
                if result is not None:
                    row(f"{title} {label}", *result, unit)
            continue
        if item == "sgemm":
            n = 2048
            a, b = torch.randn(n, n), torch.randn(n, n)
            result = paired(
                lambda calls: lib.striate_paired_sgemm(n, calls),
                {"MKL via PyTorch": lambda: a @ b}, 2 * n**3 / 1e9, peak)
            if result is not None:
                row(f"sgemm {n}²", *result)
            continue
        name, geometry = cases[item]
        shape, *rest = geometry
        for pass_name, code in PASSES.items():
            def striate_seconds(calls, code=code):
                return lib.striate_paired_conv(*shape, *rest, code, calls)
            if striate_seconds(1) < 0:
                continue
            anchors, flops = conv_anchors(geometry, pass_name)
            result = paired(striate_seconds, anchors, flops / 1e9, peak)
            if result is not None:
                row(f"{name} {pass_name}", *result)


if __name__ == "__main__":
    main()
