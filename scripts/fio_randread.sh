#!/usr/bin/env bash
# The fio reference runs that `screc bench io` compares against: 4 KiB random O_DIRECT reads through fio's
# io_uring engine, per queue depth, in two set-ups, printing IOPS and p50/p99 latency:
#   default  fio at its defaults (one submission per read, no registered files, a random map);
#   batched  the engine's advantages: a whole queue per submit and reap, registered files, and its offset
#            policy (random with replacement: --randrepeat=0 --norandommap).
#
#   scripts/fio_randread.sh [FILE] [SECONDS] [QUEUE_DEPTHS...]
#   scripts/fio_randread.sh data/bench_io.bin 5 1 32 128      (the defaults)
#
# SECONDS may be fractional (fio gets it in microseconds, not rounded). FILE is created (2 GiB of random
# bytes) if it does not exist; data/ is git-ignored.
set -euo pipefail

file=${1:-data/bench_io.bin}
seconds=${2:-5}
shift $(( $# > 2 ? 2 : $# ))
qds=("$@")
[ ${#qds[@]} -gt 0 ] || qds=(1 32 128)

command -v fio >/dev/null || { echo "fio not found (apt-get install -y fio)" >&2; exit 1; }
if [ ! -f "$file" ]; then
    mkdir -p "$(dirname "$file")"
    echo "creating $file (2 GiB of random bytes)" >&2
    head -c $((2 * 1024 * 1024 * 1024)) /dev/urandom > "$file.tmp" && sync "$file.tmp" && mv "$file.tmp" "$file"
fi
runtime_us=$(python3 -c 'import sys; print(round(float(sys.argv[1]) * 1e6))' "$seconds")

printf '%6s %-8s %12s %10s %10s\n' qd setup iops p50_us p99_us
for qd in "${qds[@]}"; do
    for setup in default batched; do
        extra=()
        if [ "$setup" = batched ]; then
            extra=(--iodepth_batch_submit="$qd" --iodepth_batch_complete_max="$qd" --registerfiles
                   --randrepeat=0 --norandommap)
        fi
        fio --name=r --filename="$file" --rw=randread --bs=4096 --direct=1 --ioengine=io_uring \
            --iodepth="$qd" --runtime="${runtime_us}us" --time_based --lat_percentiles=1 --output-format=json \
            "${extra[@]}" |
        python3 -c '
import json, sys
qd, setup = sys.argv[1], sys.argv[2]
text = sys.stdin.read()
r = json.loads(text[text.index("{"):])["jobs"][0]["read"]
p = r["lat_ns"]["percentile"]
iops, p50, p99 = r["iops"], p["50.000000"] / 1e3, p["99.000000"] / 1e3
print(f"{qd:>6} {setup:<8} {iops:12.0f} {p50:10.0f} {p99:10.0f}")
' "$qd" "$setup"
    done
done
