#!/usr/bin/env bash
# Data-parallel MNIST CNN training throughput in one sitting: striate on 1 rank x 1 thread and
# 2 ranks x 1 thread over MPI (Open MPI, shared memory on this machine), then PyTorch in one
# process and with DistributedDataParallel over gloo (2 processes x 1 thread), all with 64
# images per rank per step, and the scaling of each. Needs the Debian packages of the README
# (libopenmpi-dev openmpi-bin libclang-dev) and pip's torch; MNIST in $STRIATE_DATA/mnist.
# Each figure is the best of ROUNDS (3) runs of STEPS (60) timed steps after as many warm-up
# steps. Run it on a quiet machine: every rank needs a core of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
export STRIATE_DATA="${STRIATE_DATA:-$(cd .. && pwd)/shared/data}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
steps="${STEPS:-60}"
cargo build --release --features mpi --example distributed_bench
bench=target/release/examples/distributed_bench
mpi=(mpirun --oversubscribe --bind-to core --mca btl_vader_single_copy_mechanism none)

cpu() { grep -m1 "^$1" /proc/cpuinfo | cut -d: -f2 | xargs; }
echo "== $(cpu 'model name') (family $(cpu 'cpu family') model $(cpu 'model')), $(nproc) cores"
# The best of `rounds` runs of a command printing "... N samples/s ...".
rounds="${ROUNDS:-3}"
best() {
    local best=0 rate out
    for _ in $(seq "$rounds"); do
        out=$("$@")
        echo "$out" >&2
        rate=$(echo "$out" | grep -o '[0-9.]* samples/s' | cut -d' ' -f1)
        best=$(python3 -c "print(max($best, $rate))")
    done
    echo "$best"
}
one=$(best "$bench" --threads 1 --steps "$steps")
two=$(best "${mpi[@]}" -np 2 "$bench" --threads 1 --steps "$steps" --distributed)
torch_one=$(best python3 scripts/bench_ddp.py --ranks 1 --steps "$steps")
torch_two=$(best python3 scripts/bench_ddp.py --ranks 2 --steps "$steps")
python3 - "$one" "$two" "$torch_one" "$torch_two" <<'PY'
import sys
one, two, t1, t2 = map(float, sys.argv[1:])
print()
print("| | 1 rank x 1 thread | 2 ranks x 1 thread | scaling |")
print("|---|---|---|---|")
print(f"| striate (MPI) | {one:.0f} samples/s | {two:.0f} samples/s | {two / one:.2f}x |")
print(f"| PyTorch DDP (gloo) | {t1:.0f} samples/s | {t2:.0f} samples/s | {t2 / t1:.2f}x |")
print(f"\nstriate 2 ranks / PyTorch DDP 2 ranks: {two / t2:.2f}x")
PY
