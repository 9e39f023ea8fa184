#!/usr/bin/env bash
# Soak run: replay a small store again and again under --verify until DURATION has elapsed, then check that
# no batch failed and that memory did not grow.
#
#   scripts/soak.sh DURATION          DURATION: seconds, or with a unit: 45, 90s, 10m, 2h
#
# Builds (or reuses) a small store and trace under $SOAK_DIR (default runs/soak, git-ignored), then loops
# `screc replay --verify --no-live --json ...`, cycling through the policies all-ssd, all-tt and half-hot
# (a plan with half of each table in DRAM), with the live view off. Every iteration's peak resident set
# (payload memory.peak_rss_bytes) is recorded. Fails (exit 1) if a replay exits non-zero, a batch failed or
# was not verified, or, for any policy, the last iteration's peak RSS exceeds the first one's by more than
# SOAK_RSS_TOLERANCE_PCT percent (default 10) plus SOAK_RSS_SLACK_MIB (default 16 MiB, allocator noise).
# Prints one line per iteration and a summary. Exit 2 on bad usage.
#
# Environment: SOAK_DIR, SOAK_ENGINE (default: uring if io_uring works here, else pread), SOAK_SCALE (store and
# trace row scale, default 20), SOAK_BATCHES (trace batches, default 40), SOAK_RSS_TOLERANCE_PCT,
# SOAK_RSS_SLACK_MIB, PYTHON (default python3).
set -euo pipefail

usage() { echo "usage: scripts/soak.sh DURATION   (seconds, or 90s, 10m, 2h)" >&2; exit 2; }
[ $# -eq 1 ] || usage
case "$1" in
  *h) secs=$(( ${1%h} * 3600 )) ;;
  *m) secs=$(( ${1%m} * 60 )) ;;
  *s) secs=${1%s} ;;
  *) secs=$1 ;;
esac 2>/dev/null || usage
[[ "$secs" =~ ^[0-9]+$ ]] && [ "$secs" -gt 0 ] || usage

repo=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
screc() { "$PY" -m bench.cli "$@"; }
dir=${SOAK_DIR:-$repo/runs/soak}
scale=${SOAK_SCALE:-20}
batches=${SOAK_BATCHES:-40}
tol=${SOAK_RSS_TOLERANCE_PCT:-10}
slack=${SOAK_RSS_SLACK_MIB:-16}
engine=${SOAK_ENGINE:-$("$PY" -c 'from emulator.io import uring_available as u; print("uring" if u()[0] else "pread")')}
mkdir -p "$dir/work"
dir=$(cd "$dir" && pwd)

# -- a small store and trace (reused when they are already there and whole) ---------------------------
if ! screc store verify "$dir/store" >/dev/null 2>&1; then
  echo "soak: building store (tiny preset x$scale) in $dir/store"
  screc store build --model tiny --scale "$scale" --tt-ranks 4 --seed 1 -o "$dir/store" >/dev/null
fi
if ! screc trace stats "$dir/trace.h5" --batches 1 --json >/dev/null 2>&1; then
  echo "soak: generating trace ($batches batches) in $dir/trace.h5"
  screc trace gen --model tiny --scale "$scale" --batches "$batches" --seed 2 -o "$dir/trace.h5" >/dev/null
fi
"$PY" - "$dir" <<'EOF'
import sys
from pathlib import Path
from emulator.plan import Plan, TablePlacement
from emulator.store.store import Store
d = Path(sys.argv[1])
s = Store.open(d / "store")
Plan(store_id=s.store_id, planner="half-hot",
     tables=tuple(TablePlacement(t.name, t.rows // 2) for t in s.tables)).save(d / "half-hot.json")
EOF

# -- the loop ----------------------------------------------------------------------------------------
policies=("--policy all-ssd" "--policy all-tt" "--plan $dir/half-hot.json")
names=(all-ssd all-tt half-hot)
: > "$dir/soak.tsv"
start=$(date +%s)
i=0
echo "soak: replaying for ${secs}s with --verify (engine $engine), results in $dir/soak.tsv"
while [ $(( $(date +%s) - start )) -lt "$secs" ]; do
  k=$(( i % 3 ))
  out="$dir/work/iter.json"
  rm -f "$out"
  # shellcheck disable=SC2086
  if ! (cd "$dir/work" && screc replay --store "$dir/store" --trace "$dir/trace.h5" ${policies[$k]} \
        --engine "$engine" --verify --no-live --json "$out" >/dev/null 2>"$dir/work/stderr.txt"); then
    echo "soak: FAILED: iteration $i (${names[$k]}) exited non-zero:" >&2
    tail -n 3 "$dir/work/stderr.txt" >&2
    exit 1
  fi
  line=$("$PY" - "$out" "$i" "${names[$k]}" <<'EOF'
import json, sys
p = json.load(open(sys.argv[1]))
v = p.get("verify") or {}
ok = p.get("failed_batches", 0) == 0 and v.get("ok") is True and p.get("batches", 0) > 0
print(f"{sys.argv[2]}\t{sys.argv[3]}\t{p['batches']}\t{p.get('failed_batches', 0)}\t{int(bool(ok))}\t"
      f"{p['memory']['peak_rss_bytes']}\t{p['qps']:.0f}")
EOF
)
  echo "$line" >> "$dir/soak.tsv"
  IFS=$'\t' read -r _ pol nb failed ok rss qps <<< "$line"
  printf 'soak: iteration %d %-8s %s batches, %s failed, verify %s, peak RSS %d MiB, %s q/s\n' \
    "$i" "$pol" "$nb" "$failed" "$([ "$ok" = 1 ] && echo ok || echo FAILED)" $(( rss >> 20 )) "$qps"
  if [ "$ok" != 1 ]; then
    echo "soak: FAILED: iteration $i (${names[$k]}) had failed or unverified batches" >&2
    exit 1
  fi
  rm -rf "$dir/work/runs"  # the per-run result directories: the TSV keeps what the soak needs
  i=$(( i + 1 ))
done

# -- the verdict -------------------------------------------------------------------------------------
"$PY" - "$dir/soak.tsv" "$tol" "$slack" "$secs" <<'EOF'
import sys
from collections import defaultdict
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
tol, slack, secs = float(sys.argv[2]), int(sys.argv[3]) << 20, int(sys.argv[4])
if not rows:
    print("soak: FAILED: no iteration finished", file=sys.stderr)
    sys.exit(1)
by = defaultdict(list)
for r in rows:
    by[r[1]].append(int(r[5]))
batches = sum(int(r[2]) for r in rows)
bad = []
for pol, rss in by.items():
    first, last = rss[0], rss[-1]
    limit = first * (1 + tol / 100) + slack
    grew = "" if last <= limit else "  <-- GREW"
    print(f"soak: {pol:8s} {len(rss)} runs, peak RSS first {first >> 20} MiB, last {last >> 20} MiB, "
          f"max {max(rss) >> 20} MiB (limit {int(limit) >> 20} MiB){grew}")
    if grew:
        bad.append(pol)
print(f"soak: {len(rows)} replays, {batches} batches verified, 0 failed, in {secs}s")
if bad:
    print(f"soak: FAILED: memory grew for {', '.join(bad)} (tolerance {tol:g}% + {slack >> 20} MiB)", file=sys.stderr)
    sys.exit(1)
print("soak: ok")
EOF
