#!/usr/bin/env bash
# The issue's "forever" checks on a trained run: a 100,000-frame generate at constant
# memory (peak RSS at 10k vs 100k frames), then motion / loop / diversity figures and the
# sheets of frames 1,000+ and 99,000+.   usage: bench/duralava_acceptance.sh RUN DATA OUTPREFIX
set -euo pipefail
run=$1; data=$2; prefix=$3
bin=$(dirname "$0")/../.venv/bin
tmp=$(mktemp -d)
for n in 10000 100000; do
  /usr/bin/time -f "generate $n frames: %e s wall, peak RSS %M KB" \
    "$bin/everloop" generate "$run" --frames $n --interp 1 --out "$tmp/g$n.mp4" --quiet
done
ls -la "$tmp"
rm -rf "$tmp"
"$bin/python" "$(dirname "$0")/quality.py" "$run" --data "$data" --frames 100000 --sheets "$prefix"
