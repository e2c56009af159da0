#!/usr/bin/env python3
"""Two builds of striate alternated call batch by call batch in one process: is a change faster?

A change to a kernel moves it by a few percent, while these VMs drift by more than that from one
minute to the next; timing the two builds in separate runs can then show either sign. Here both
builds of scripts/paired's library (the same C-ABI calls scripts/paired_ratios.py times) are
loaded into this process and every round times a batch of each, the order swapped every round
(the second batch finds the machine warmer), and the result is the geometric mean of the two
orders' median ratios, as in paired_ratios.py.

Run:  cp target/paired/release/libstriate_paired.so /tmp/old.so    (before the change)
      cargo build --release --manifest-path scripts/paired/Cargo.toml --target-dir target/paired
      python3 scripts/ab_builds.py /tmp/old.so target/paired/release/libstriate_paired.so S4 S5
Workloads: S1..S7 (every pass, or `S4:0` for one: 0 forward, 1 backward-data, 2 backward-
filter, 3 forward on channel blocks), `conv:N,C,H,W,O,K,PAD,STRIDE,GROUPS[:PASS]`, `sgemm`,
`mnist` and `resnet18` (0 step, 1 inference; `mnist:0`). AB_ROUNDS (default 12) rounds.
Prints new / old: above 1, the second library is faster. Time a model row in a run of its own:
after S4 and S5 in the same process, one build's MNIST step (AVX2) once ran 30% slow for the
whole run (84 against 116 steps/s alone), a state of that library's process, not of its code.
"""

import os
import pathlib
import shutil
import sys
import tempfile
import time

os.environ.setdefault("RAYON_NUM_THREADS", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from paired_ratios import across_orders, median, open_library  # noqa: E402
from compare_pytorch import CONV_CASES  # noqa: E402

ROUNDS = 2 * ((int(os.environ.get("AB_ROUNDS", "12")) + 1) // 2)
BATCH_SECONDS = 0.1
PAUSE_SECONDS = 0.01


def load(path, scratch):
    """The library at `path`, through a copy of its own: the dynamic loader opens one file once,
    so two builds at the same path would be one library."""
    copy = pathlib.Path(scratch) / f"{len(os.listdir(scratch))}_{pathlib.Path(path).name}"
    shutil.copy(path, copy)
    return open_library(copy)


def workloads(item):
    """[(label, seconds(lib, calls))] of one command-line item."""
    name, _, passes = item.partition(":")
    if name == "sgemm":
        return [("sgemm 2048", lambda lib, n: lib.striate_paired_sgemm(2048, n))]
    if name in ("mnist", "resnet18"):
        index = 0 if name == "mnist" else 1
        return [(f"{name} {p}", lambda lib, n, p=p: lib.striate_paired_model(index, p, n))
                for p in ([int(passes)] if passes else [0, 1])]
    if name == "conv":
        geometry, _, passes = passes.partition(":")
        n, c, h, w, o, k, pad, stride, groups = (int(v) for v in geometry.split(","))
        label = geometry
    else:
        cases = {case[0].split("_")[0]: case for case in CONV_CASES}
        _, (n, c, h, w), o, k, pad, stride, groups = cases[name]
        label = name
    args = (n, c, h, w, o, k, pad, stride, groups)
    return [(f"{label} pass {p}", lambda lib, calls, p=p: lib.striate_paired_conv(*args, p, calls))
            for p in ([int(passes)] if passes else [0, 1, 2, 3])]


def compare(label, seconds, old, new):
    if seconds(old, 1) < 0 or seconds(new, 1) < 0:
        return  # a pass this shape does not have (channel blocks)
    seconds(old, 1), seconds(new, 1)
    calls = max(1, round(BATCH_SECONDS / max(seconds(old, 1), 1e-6)))
    rates = {"old": [], "new": []}
    for round_index in range(ROUNDS):
        order = [("old", old), ("new", new)]
        for side, lib in order if round_index % 2 == 0 else order[::-1]:
            rates[side].append(calls / seconds(lib, calls))
            time.sleep(PAUSE_SECONDS)
    ratios = [b / a for a, b in zip(rates["old"], rates["new"])]
    print(f"{label}: new/old {across_orders(ratios):.3f} "
          f"(range {min(ratios):.3f}-{max(ratios):.3f}; calls/s old {median(rates['old']):.1f}, "
          f"new {median(rates['new']):.1f})", flush=True)


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    with tempfile.TemporaryDirectory() as scratch:
        old, new = load(sys.argv[1], scratch), load(sys.argv[2], scratch)
        for item in sys.argv[3:]:
            for label, seconds in workloads(item):
                compare(label, seconds, old, new)


if __name__ == "__main__":
    main()
