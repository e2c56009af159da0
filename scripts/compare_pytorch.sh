#!/usr/bin/env bash
# striate against PyTorch and ONNX Runtime in one sitting on this machine: runs striate's
# criterion benches (the FMA peak, sgemm 2048, the six conv shapes, the MNIST CNN step and
# inference), then scripts/compare_pytorch.py, which times the same workloads in PyTorch
# (NCHW, channels-last, torch.compile) and ONNX Runtime and prints one table of ratios with the
# CPU model. Needs: pip install torch onnx onnxruntime. Do not run it while the machine builds.
set -euo pipefail
cd "$(dirname "$0")/.."
export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-2}"
quick=(--warm-up-time 2 --measurement-time 5)
cargo bench --bench ops -- "${quick[@]}" 'machine/fma_peak|matmul/square/2048'
cargo bench --bench conv -- "${quick[@]}" 'conv2d/'
cargo bench --bench train_step -- "${quick[@]}" 'train_step_batch64$|inference_batch256'
python3 scripts/compare_pytorch.py
