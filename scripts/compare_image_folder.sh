#!/usr/bin/env bash
# Decoding and augmenting a folder of JPEGs, striate against torchvision in the same sitting:
# RandomResizedCrop(224), a horizontal flip and ImageNet normalisation, batches of 64, on the
# machine's cores (torchvision: DataLoader(num_workers=2); striate: its thread pool, which has
# one thread per core, plus a prefetch thread).
#
# Usage: scripts/compare_image_folder.sh [COUNT [SIDE]]
#   COUNT JPEGs (default 3000) of SIDE x SIDE pixels (default 256) are made once from
#   Fashion-MNIST's test images (upscaled, tinted) in target/image-folder-bench/.
# Needs Fashion-MNIST ($STRIATE_DATA/fashion-mnist, ~/.cache/striate/fashion-mnist or Debian's
# dataset-fashion-mnist), python3 with torch, torchvision and Pillow. Prints both rates in
# images/s and their ratio, with the CPU model. Run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
count="${1:-3000}"
side="${2:-256}"
dir="target/image-folder-bench/${count}x${side}"
export STRIATE_DATA="${STRIATE_DATA:-$(cd .. && pwd)/shared/data}"

python3 scripts/image_folder_bench.py make "$dir" "$count" "$side"
field() { grep -m1 "^$1" /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'; }
echo "CPU: $(field 'model name') (family $(field 'cpu family'), model $(field 'model\s')), $(nproc) cores"

echo "== torchvision"
tv_line="$(python3 scripts/image_folder_bench.py torchvision "$dir" 2 2)"
echo "$tv_line"
tv="$(echo "$tv_line" | sed -n 's/^torchvision: \([0-9.]*\) images\/s.*/\1/p')"

echo "== striate (cargo bench --bench image_folder)"
log="$(mktemp)"
STRIATE_IMAGE_FOLDER="$dir" cargo bench --bench image_folder -- --noplot 2>&1 | tee "$log" \
    | grep -E "images in|time:|thrpt:" || true
# criterion's middle estimate of the throughput, in elements (images) per second.
st="$(grep 'thrpt:.*elem/s' "$log" | tail -1 | awk '{
    for (i = 1; i <= NF; i++) if ($i == "thrpt:") { v = $(i + 3); u = $(i + 4) }
    m = (u ~ /^K/) ? 1000 : ((u ~ /^M/) ? 1000000 : 1); printf "%.1f", v * m }')"
rm -f "$log"

echo
echo "| $count JPEGs ${side}x${side}, RandomResizedCrop(224) + flip + normalise | images/s |"
echo "|---|---|"
echo "| torchvision ImageFolder + DataLoader(num_workers=2) | $tv |"
echo "| striate ImageFolder + DataLoader (prefetch) | $st |"
awk -v s="$st" -v t="$tv" 'BEGIN { if (t > 0) printf "striate / torchvision: %.2fx\n", s / t }'
