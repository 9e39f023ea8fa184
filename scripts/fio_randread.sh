#!/usr/bin/env bash
# The fio reference run that `screc bench io` compares against: 4 KiB random O_DIRECT reads
# through fio's io_uring engine, one run per queue depth, printing IOPS and p50/p99 latency.
#
#   scripts/fio_randread.sh [FILE] [SECONDS] [QUEUE_DEPTHS...]
#   scripts/fio_randread.sh data/bench_io.bin 5 1 32 128      (the defaults)
#
# FILE is created (2 GiB of random bytes) if it does not exist; data/ is git-ignored.
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

printf '%6s %12s %10s %10s\n' qd iops p50_us p99_us
for qd in "${qds[@]}"; do
    fio --name=r --filename="$file" --rw=randread --bs=4k --direct=1 --ioengine=io_uring \
        --iodepth="$qd" --runtime="$seconds" --time_based --lat_percentiles=1 --output-format=json |
    python3 -c '
import json, sys
qd = sys.argv[1]
r = json.load(sys.stdin)["jobs"][0]["read"]
p = r["lat_ns"]["percentile"]
iops, p50, p99 = r["iops"], p["50.000000"] / 1e3, p["99.000000"] / 1e3
print(f"{qd:>6} {iops:12.0f} {p50:10.0f} {p99:10.0f}")
' "$qd"
done
