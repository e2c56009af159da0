#!/usr/bin/env bash
# Where a profile's time went, by striate kernel: every kernel runs through one function per
# instruction set (`run_avx512`, ...), so `perf report` lumps them together; this maps each
# sampled address through `addr2line -i` (the binary needs debug info, as the bench profile
# has) to the innermost striate function of its inline chain and sums the samples by it.
#
#   perf record -o perf.data target/release/deps/conv-... --bench 'S4_resnet_down/forward'
#   bash scripts/perf_by_kernel.sh perf.data target/release/deps/conv-...
set -euo pipefail
data=$1
binary=$(realpath "$2")
name=$(basename "$binary")
# Where the binary's code was mapped, and the segment's file offset and address in the ELF.
# (`grep -m1` stops reading early: perf's broken pipe is not a failure.)
mapping=$({ perf script -i "$data" --show-mmap-events 2>/dev/null || true; } \
    | grep -m1 "MMAP.*r-xp $binary\$" \
    | sed -E 's/.*\[(0x[0-9a-f]+)\(0x[0-9a-f]+\) @ (0x[0-9a-f]+) .*/\1 \2/' || true)
if [ -z "$mapping" ]; then
    echo "perf_by_kernel: $data holds no samples mapped from $binary (was it recorded from it?)" >&2
    exit 1
fi
segment=$(readelf -lW "$binary" | awk '$1 == "LOAD" && / R E / {print $2, $3; exit}')
perf script -i "$data" -F ip,dso 2>/dev/null | awk -v n="$name" '$2 ~ n {print $1}' \
    | sort | uniq -c | python3 -c '
import collections, re, subprocess, sys
start, offset = (int(v, 16) for v in sys.argv[1].split())
seg_offset, seg_addr = (int(v, 16) for v in sys.argv[2].split())
rows = [(int(c), int(ip, 16) - start + offset - seg_offset + seg_addr)
        for c, ip in (line.split() for line in sys.stdin)]
out = subprocess.run(["addr2line", "-f", "-i", "-C", "-a", "-e", sys.argv[3]],
                     input="\n".join(hex(a) for _, a in rows),
                     capture_output=True, text=True, check=True).stdout
by_kernel = collections.Counter()
for (count, _), block in zip(rows, out.split("\n0x")):
    frames = [f for f in block.split("\n")[1:] if f and not f.startswith(("/", "??"))]
    paths = (m.group(0).rstrip(":") for f in frames if (m := re.search(r"striate::[\w:]+", f)))
    key = next((p for p in paths if "::vector::" not in p and "::simd::" not in p),
               frames[-1][:70] if frames else "?")
    by_kernel[key] += count
total = sum(by_kernel.values())
for key, count in by_kernel.most_common(30):
    print(f"{100 * count / total:5.1f}%  {key}")
' "$mapping" "$segment" "$binary"
