#!/usr/bin/env python3
"""One table of striate against PyTorch and ONNX Runtime, measured in one sitting on this machine.

The two sides take turns, ROUNDS times (default 2): striate's criterion benches (the command in
STRIATE_BENCHES, which scripts/compare_pytorch.sh sets; without it, the results already in
target/criterion/*/new/ are read once), then PyTorch's side here; each figure is the best of its
side's rounds. A VM's noise comes and goes over minutes: with a single pass one side could be
measured in a quiet minute and the other in a busy one (one build read 0.77x and then 1.92x ONNX
Runtime on MNIST inference in two single-pass sittings five minutes apart). PyTorch's side runs here: fp32, 2 threads, NCHW and
channels-last, eager and torch.compile (skipped with a note if it fails), and ONNX Runtime on the
same MNIST CNN exported from PyTorch. Every ratio is striate / best anchor for throughputs (higher
is better for striate). Absolute figures hold for this machine only.

Each figure comes twice: typical (the median) and fastest (striate's fastest criterion sample, a
mean over a batch of calls, against the anchor's fastest single call: the comparison leans towards
the anchor). A VM's vCPU can be half-taken for seconds at a time (whole runs of 150 calls at half
speed, for PyTorch and striate alike), which moves the medians by a fifth between minutes; the
fastest calls show the code's speed when the machine is quiet. The last column is the range of
the typical ratio over the rounds, each round's two sides taken together: how far the noise of
one sitting moves a ratio (one build read 1.11x and 1.27x ONNX Runtime in two sittings twenty
minutes apart).

Run:  bash scripts/compare_pytorch.sh      (or: python3 scripts/compare_pytorch.py after the benches)
      bash scripts/compare_pytorch.sh avx2 (both sides capped at AVX2: STRIATE_ISA for striate,
                                            ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA and
                                            MKL_ENABLE_INSTRUCTIONS for PyTorch)
Needs: pip install torch onnx onnxruntime
"""

import json
import os
import pathlib
import platform
import subprocess
import time
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

THREADS = 2
torch.set_num_threads(THREADS)
ROOT = pathlib.Path(__file__).resolve().parent.parent
# torch.compile's on-disk cache, one per instruction-set cap: code the inductor compiled in an
# uncapped sitting and reused under ATEN_CPU_CAPABILITY=avx2 computed garbage indices (the
# MNIST step raised "index 1026396048 is out of bounds for dimension 1 with size 784" in two
# runs of two; with its own cache, none). Read when torch.compile first compiles.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(
    ROOT / "target" / f"torchinductor-{os.environ.get('ATEN_CPU_CAPABILITY', 'default')}"))
CONV_CASES = [
    ("S1_mnist_conv1", (64, 1, 28, 28), 32, 3, 1, 1, 1),
    ("S2_mnist_conv2", (64, 32, 14, 14), 64, 3, 1, 1, 1),
    ("S3_vgg_conv3", (4, 256, 56, 56), 256, 3, 1, 1, 1),
    ("S4_resnet_down", (8, 64, 56, 56), 128, 3, 1, 2, 1),
    ("S5_pointwise", (8, 256, 56, 56), 64, 1, 0, 1, 1),
    ("S6_depthwise", (8, 128, 56, 56), 128, 3, 1, 1, 128),
    ("S7_depthwise_s2", (8, 128, 56, 56), 128, 3, 1, 2, 128),
]


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


class Measure(NamedTuple):
    """A figure as measured typically (from the median time) and at the fastest."""

    typical: float
    fastest: float

    def map(self, f):
        return Measure(f(self.typical), f(self.fastest))


def per_component(better):
    """`better` (min or max) applied to each component of two Measures."""
    return lambda a, b: Measure(better(a.typical, b.typical), better(a.fastest, b.fastest))


def criterion_results(since=None):
    """full_id -> (Measure of seconds per call, throughput elements or None), of the benches
    that ran from `since` (seconds since the epoch) on: criterion keeps every bench's last
    result, and a bench that no longer runs (the channel-blocks forward with the instruction
    set capped at AVX2, where the forward does not run on them) must not be read from an
    earlier sitting."""
    results = {}
    for bench in (ROOT / "target/criterion").glob("**/new/benchmark.json"):
        if since is not None and (bench.parent / "estimates.json").stat().st_mtime < since:
            continue
        meta = json.loads(bench.read_text())
        estimates = json.loads((bench.parent / "estimates.json").read_text())
        samples = json.loads((bench.parent / "sample.json").read_text())
        fastest = min(t / i for t, i in zip(samples["times"], samples["iters"]))
        elements = (meta.get("throughput") or {}).get("Elements")
        median = estimates["median"]["point_estimate"]
        results[meta["full_id"]] = (Measure(median * 1e-9, fastest * 1e-9), elements)
    return results


def seconds(fn, min_time=1.0):
    """Measure of one call's seconds: the median and the fastest of at least `min_time`."""
    for _ in range(3):
        fn()
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_time or len(times) < 5:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return Measure(times[len(times) // 2], times[0])


def mnist_cnn():
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10),
    )


LAYOUTS = (("NCHW", torch.contiguous_format), ("CL", torch.channels_last))


def conv_passes(shape, cout, k, pad, stride, groups, layout):
    """The three passes of one convolution in PyTorch on fresh operands in `layout`, as
    {pass name: call}, and its multiply-adds times two."""
    x = torch.randn(shape).to(memory_format=layout)
    w = torch.randn(cout, shape[1] // groups, k, k).to(memory_format=layout)
    b = torch.randn(cout)
    y = F.conv2d(x, w, b, stride, pad, 1, groups)
    gy = torch.randn_like(y)
    flops = 2 * y.numel() * (shape[1] // groups) * k * k

    def backward(mask):
        return torch.ops.aten.convolution_backward(
            gy, x, w, [cout], [stride] * 2, [pad] * 2, [1, 1], False, [0, 0], groups, mask
        )

    passes = {
        "forward": lambda: F.conv2d(x, w, b, stride, pad, 1, groups),
        "backward_data": lambda: backward([True, False, False]),
        "backward_filter": lambda: backward([False, True, True]),
    }
    return passes, flops


def pytorch_conv():
    """(case, pass) -> {anchor name: GFLOP/s}."""
    out = {}
    for layout_name, layout in LAYOUTS:
        for name, *geometry in CONV_CASES:
            passes, flops = conv_passes(*geometry, layout)
            for pass_name, fn in passes.items():
                gflops = seconds(fn, 0.5).map(lambda t, flops=flops: flops / t / 1e9)
                out.setdefault((name, pass_name), {})[f"PyTorch {layout_name}"] = gflops
    return out


def images(t):
    """Images per second of a batch of 256 in `t` seconds."""
    return 256 / t


def ort_session(model, example, name, **export):
    """An ONNX Runtime session (2 threads) of `model` exported from PyTorch to target/`name`,
    or None with a note when onnxruntime is missing or the export fails."""
    try:
        import onnxruntime as ort

        path = ROOT / "target" / name
        torch.onnx.export(model.eval(), example, str(path), dynamo=False, input_names=["x"],
                          opset_version=17, **export)
        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        options.inter_op_num_threads = 1
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001 - a missing runtime must not stop the table
        print(f"note: ONNX Runtime's {name} skipped ({type(error).__name__}: "
              f"{str(error)[:120]})")
        return None


def sgd_step_call(model, x, labels, lr):
    """One SGD step (momentum 0.9) of `model` on `x`, as a call."""
    sgd = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)

    def train_step():
        sgd.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), labels).backward()
        sgd.step()

    return train_step


def inference_call(model, x):
    """`model(x)` in eval and inference mode, as a call."""
    model.eval()

    def infer():
        with torch.inference_mode():
            return model(x)

    return infer


def mnist_workloads():
    """{"step": {anchor: call}, "inference": {anchor: call}}: the MNIST CNN's SGD step at batch
    64 and its inference at batch 256 in PyTorch NCHW, channels-last and torch.compile, and the
    inference in ONNX Runtime. Shared by this script and scripts/paired_ratios.py."""
    torch.manual_seed(0)
    step, inference = {}, {}
    labels = torch.arange(64) % 10
    for layout_name, layout in LAYOUTS:
        model = mnist_cnn().to(memory_format=layout)
        x = torch.rand(64, 1, 28, 28).to(memory_format=layout)
        step[f"PyTorch {layout_name}"] = sgd_step_call(model, x, labels, 0.05)
        batch = torch.rand(256, 1, 28, 28).to(memory_format=layout)
        inference[f"PyTorch {layout_name}"] = inference_call(
            mnist_cnn().to(memory_format=layout), batch)
    try:
        step["PyTorch compile"] = sgd_step_call(
            torch.compile(mnist_cnn()), torch.rand(64, 1, 28, 28), labels, 0.05)
        inference["PyTorch compile"] = inference_call(
            torch.compile(mnist_cnn()), torch.rand(256, 1, 28, 28))
        # Compiled on the first call: done here, so that a missing compiler is noticed here.
        step["PyTorch compile"]()
        inference["PyTorch compile"]()
    except Exception as error:  # noqa: BLE001 - a missing compiler must not stop the table
        print(f"note: torch.compile skipped ({type(error).__name__}: {str(error)[:120]})")
        step.pop("PyTorch compile", None)
        inference.pop("PyTorch compile", None)
    session = ort_session(mnist_cnn(), torch.rand(1, 1, 28, 28), "compare_mnist_cnn.onnx",
                          dynamic_axes={"x": {0: "batch"}})
    if session is not None:
        batch = torch.rand(256, 1, 28, 28).numpy()
        inference["ONNX Runtime"] = lambda: session.run(None, {"x": batch})
    return {"step": step, "inference": inference}


def resnet18_workloads():
    """{"step": {anchor: call}, "inference": {anchor: call}}: ResNet-18 (torchvision's, random
    weights) on 224x224 images, an SGD step at batch 8 and inference of a single image, in
    PyTorch NCHW and channels-last, and the single image in ONNX Runtime. torch.compile is left
    out: compiling ResNet-18's step takes minutes on two cores. Empty without torchvision."""
    try:
        import torchvision
    except ImportError:
        print("note: ResNet-18 skipped (pip install torchvision)")
        return {"step": {}, "inference": {}}
    torch.manual_seed(0)
    step, inference = {}, {}
    labels = torch.arange(8) * 100
    for layout_name, layout in LAYOUTS:
        model = torchvision.models.resnet18().to(memory_format=layout)
        x = torch.randn(8, 3, 224, 224).to(memory_format=layout)
        step[f"PyTorch {layout_name}"] = sgd_step_call(model, x, labels, 0.01)
        image = torch.randn(1, 3, 224, 224).to(memory_format=layout)
        inference[f"PyTorch {layout_name}"] = inference_call(
            torchvision.models.resnet18().to(memory_format=layout), image)
    session = ort_session(torchvision.models.resnet18(), torch.randn(1, 3, 224, 224),
                          "compare_resnet18.onnx")
    if session is not None:
        image = torch.randn(1, 3, 224, 224).numpy()
        inference["ONNX Runtime"] = lambda: session.run(None, {"x": image})
    return {"step": step, "inference": inference}


def pytorch_mnist():
    """{"step": {anchor: ms}, "inference": {anchor: img/s}}."""
    workloads = mnist_workloads()
    step = {name: seconds(fn).map(lambda t: t * 1e3) for name, fn in workloads["step"].items()}
    inference = {name: seconds(fn).map(images) for name, fn in workloads["inference"].items()}
    return step, inference


def pytorch_resnet18():
    """{"step": {anchor: ms}, "inference": {anchor: ms}}."""
    workloads = resnet18_workloads()
    step = {name: seconds(fn, 3.0).map(lambda t: t * 1e3)
            for name, fn in workloads["step"].items()}
    inference = {name: seconds(fn).map(lambda t: t * 1e3)
                 for name, fn in workloads["inference"].items()}
    return step, inference


def pytorch_sgemm():
    a, b = torch.rand(2048, 2048), torch.rand(2048, 2048)
    return seconds(lambda: a @ b).map(lambda t: 2 * 2048**3 / t / 1e9)


def typical_ratio(ours, anchors, higher_is_better):
    """striate's typical figure over the best anchor's (> 1: striate ahead), or None."""
    if ours is None or not anchors:
        return None
    pick = max if higher_is_better else min
    best = pick(anchor.typical for anchor in anchors.values())
    return ours.typical / best if higher_is_better else best / ours.typical


def row(label, ours, anchors, unit, higher_is_better, round_ratios):
    """One line of the table: typical figures and their ratio, then the ratio of the fastest,
    then the range of the typical ratio over the rounds, each round's sides taken together."""
    spread = [r for r in round_ratios if r is not None]
    spread = f"{min(spread):.2f}–{max(spread):.2f}" if spread else ""
    if ours is None or not anchors:
        return f"| {label} | {'—' if ours is None else f'{ours.typical:.1f} {unit}'} | | | | |"
    pick = max if higher_is_better else min
    best_name, best = pick(anchors.items(), key=lambda kv: kv[1].typical)
    fastest = pick(anchor.fastest for anchor in anchors.values())
    ratio = fastest / ours.fastest if not higher_is_better else ours.fastest / fastest
    return (f"| {label} | {ours.typical:.1f} {unit} | {best_name} {best.typical:.1f} | "
            f"{typical_ratio(ours, anchors, higher_is_better):.2f} | {ratio:.2f} | {spread} |")


def best_of(rounds, better):
    """The best value of each key over the rounds' dicts (`better` picks between two values);
    nested dicts merge key by key."""
    merged = {}
    for result in rounds:
        for key, value in result.items():
            if isinstance(value, dict):
                merged[key] = best_of([merged.get(key, {}), value], better)
            elif key not in merged:
                merged[key] = value
            else:
                merged[key] = better(merged[key], value)
    return merged


def main():
    rounds = int(os.environ.get("ROUNDS", "2"))
    bench_command = os.environ.get("STRIATE_BENCHES")
    ours, anchors = [], []
    for round_index in range(rounds if bench_command else 1):
        started = None
        if bench_command:
            print(f"== round {round_index + 1} of {rounds}: striate's benches", flush=True)
            started = time.time()
            subprocess.run(["bash", "-c", bench_command], check=True)
        ours.append(criterion_results(started))
        print(f"== round {round_index + 1}: PyTorch and ONNX Runtime", flush=True)
        step, inference = pytorch_mnist()
        resnet_step, resnet_inference = pytorch_resnet18()
        anchors.append({
            "step": step, "inference": inference, "sgemm": {"MKL via PyTorch": pytorch_sgemm()},
            "resnet_step": resnet_step, "resnet_inference": resnet_inference,
            "conv": {f"{name}/{pass_name}": value
                     for (name, pass_name), value in pytorch_conv().items()},
        })
    # Criterion's entries are (Measure of seconds, elements): the faster of each component wins.
    results = best_of(ours, lambda a, b: (per_component(min)(a[0], b[0]), a[1]))
    best = {
        "step": best_of([a["step"] for a in anchors], per_component(min)),
        "inference": best_of([a["inference"] for a in anchors], per_component(max)),
        "sgemm": best_of([a["sgemm"] for a in anchors], per_component(max)),
        "resnet_step": best_of([a["resnet_step"] for a in anchors], per_component(min)),
        "resnet_inference": best_of([a["resnet_inference"] for a in anchors],
                                    per_component(min)),
        "conv": best_of([a["conv"] for a in anchors], per_component(max)),
    }

    def throughput(full_id, scale=1e-9, results=results):
        if full_id not in results:
            return None
        measure, elements = results[full_id]
        return measure.map(lambda t: elements / t * scale)

    def millis(full_id, results=results):
        return results[full_id][0].map(lambda t: t * 1e3) if full_id in results else None

    # The ceiling is the fastest sample of the FMA loop, not its median: noise only slows a
    # loop down (the median read 222 GFLOP/s and the fastest sample 230 on a Zen 4 whose 8x48
    # tile loop sustained 116 per core from L1), so a median peak flatters every "% of peak".
    peak_measure = throughput("machine/fma_peak")
    peak = None if peak_measure is None else peak_measure.fastest
    isa = os.environ.get("STRIATE_ISA", "widest available")
    # ONNX Runtime has no instruction-set cap: capped runs compare with PyTorch (capped) alone.
    capped = "STRIATE_ISA" in os.environ
    uncapped_ort = best["inference"].pop("ONNX Runtime", None) if capped else None
    if capped:
        best["resnet_inference"].pop("ONNX Runtime", None)
    for a in anchors if capped else []:
        a["inference"].pop("ONNX Runtime", None)
        a["resnet_inference"].pop("ONNX Runtime", None)
    print(f"\nCPU: {cpu_model()}; {THREADS} threads; torch {torch.__version__}; "
          f"instruction set: {isa} (PyTorch: ATEN_CPU_CAPABILITY="
          f"{os.environ.get('ATEN_CPU_CAPABILITY', 'default')}, ONEDNN_MAX_CPU_ISA="
          f"{os.environ.get('ONEDNN_MAX_CPU_ISA', 'default')}); "
          f"best of {len(ours)} alternating round(s) per side")
    print(f"FMA peak (cargo bench --bench ops -- machine, fastest sample): "
          f"{'not measured' if peak is None else f'{peak:.0f} GFLOP/s'}"
          f"{'' if peak is None else f' (median {peak_measure.typical:.0f})'}\n")
    print("| workload | striate | best anchor | ratio (>1: striate ahead) | ratio of the fastest "
          "| ratio per round |")
    print("|---|---|---|---|---|---|")

    def lines(results, anchors):
        """(label, striate's Measure, the anchors' Measures, unit, higher is better) of each
        line of the table, from one set of results."""
        yield ("sgemm 2048², GFLOP/s", throughput("matmul/square/2048", results=results),
               anchors["sgemm"], "GFLOP/s", True)
        yield ("MNIST CNN SGD step, batch 64, ms",
               millis("mnist_cnn/train_step_batch64", results=results), anchors["step"], "ms",
               False)
        yield ("MNIST CNN inference, batch 256, img/s",
               throughput("mnist_cnn/inference_batch256", 1.0, results=results),
               anchors["inference"], "img/s", True)
        yield ("ResNet-18 SGD step, batch 8 of 224², ms",
               millis("resnet18/train_step_batch8", results=results), anchors["resnet_step"],
               "ms", False)
        yield ("ResNet-18 inference, 1 image of 224², ms",
               millis("resnet18/inference_batch1", results=results),
               anchors["resnet_inference"], "ms", False)
        for name, *_ in CONV_CASES:
            for pass_name in ("forward", "backward_data", "backward_filter"):
                yield (f"conv {name} {pass_name}, GFLOP/s",
                       throughput(f"conv2d/{name}/{pass_name}", results=results),
                       anchors["conv"].get(f"{name}/{pass_name}", {}), "GFLOP/s", True)
                # The forward in the layout an inference chain keeps (channel blocks in and
                # out), beside PyTorch's channels-last (channels-last in and out), where the
                # shape runs on blocks.
                kept = throughput(f"conv2d/{name}/forward_channel_blocks", results=results)
                if pass_name == "forward" and kept is not None:
                    yield (f"conv {name} forward in channel blocks, GFLOP/s", kept,
                           anchors["conv"].get(f"{name}/forward", {}), "GFLOP/s", True)

    per_round = [list(lines(r, a)) for r, a in zip(ours, anchors)]
    for index, (label, ours_measure, line_anchors, unit, higher) in enumerate(
            lines(results, best)):
        if unit == "GFLOP/s" and ours_measure is not None and peak and label.startswith("conv"):
            label += f" ({100 * ours_measure.typical / peak:.0f}% of peak)"
        round_ratios = [typical_ratio(r[index][1], r[index][2], higher) for r in per_round]
        print(row(label, ours_measure, line_anchors, unit, higher, round_ratios))
    if uncapped_ort is not None:
        print(f"\nONNX Runtime, which no variable caps, is left out of the inference anchors: "
              f"it ran at {uncapped_ort.typical:.1f} img/s on the CPU's widest instructions.")


if __name__ == "__main__":
    main()
