#!/usr/bin/env bash
# striate against PyTorch and ONNX Runtime in one sitting on this machine: scripts/compare_pytorch.py
# alternates striate's criterion benches (the FMA peak, sgemm 2048, the six conv shapes, the MNIST
# CNN step and inference, ResNet-18's step and single-image inference; ROUNDS times, default 2)
# with the same workloads in PyTorch (NCHW, channels-last, torch.compile) and ONNX Runtime and
# prints one table of ratios with the CPU model. Needs: pip install torch torchvision onnx
# onnxruntime. Do not run it while the machine builds. Then scripts/paired_ratios.py times the
# kernels (sgemm, S1-S7) alternated with PyTorch's in one process, batch by batch.
#
#   bash scripts/compare_pytorch.sh        # each side on the widest instructions it finds
#   bash scripts/compare_pytorch.sh avx2   # both sides capped at AVX2 (and FMA)
set -euo pipefail
cd "$(dirname "$0")/.."
export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-2}"
case "${1:-}" in
    "") ;;
    avx2)
        export STRIATE_ISA=avx2 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 \
            MKL_ENABLE_INSTRUCTIONS=AVX2
        ;;
    *) echo "usage: $0 [avx2]" >&2; exit 2 ;;
esac
# The benches and PyTorch's side take turns ROUNDS times (default 2); each side keeps its best.
quick="--warm-up-time 2 --measurement-time 5"
export STRIATE_BENCHES="cargo bench --bench ops -- $quick 'machine/fma_peak|matmul/square/2048' \
 && cargo bench --bench conv -- $quick 'conv2d/' \
 && cargo bench --bench train_step -- $quick 'train_step_batch64\$|inference_batch256|resnet18/'"
python3 scripts/compare_pytorch.py
# Then the kernels again, alternated with PyTorch call batch by call batch in one process
# (scripts/paired_ratios.py says why): the ratios to read where the table above moves between
# sittings. PAIRED=0 skips it.
if [ "${PAIRED:-1}" != 0 ]; then
    echo
    python3 scripts/paired_ratios.py
fi
