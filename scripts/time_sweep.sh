#!/usr/bin/env bash
# Measurement, side by side on this machine: the leaderboard script as it was before `bench sweep`
# (xargs -P 2 over `bench run`, one process per method x split) against `bench sweep -j 2` (one unit per
# method x split x fold x seed), on the same grid (METHODS, both splits, all folds, seed 0, no scenarios),
# each side in a fresh cache under OUT (models and sealed fold stores built from scratch; the default
# dataset is shared through a link to $PLATEBENCH_CACHE/synthetic, so generate it first: bench data synth).
# Prints both wall times and the record counts; the records stay under OUT/<side>/results.
#
#   bash scripts/time_sweep.sh            # OUT=/tmp/timing, METHODS="arm_bn erm adabn intensity_stats"
set -u
METHODS="${METHODS:-arm_bn erm adabn intensity_stats}"
OUT="${OUT:-/tmp/timing}"
DATA="${PLATEBENCH_CACHE:-$HOME/.cache/platebench}/synthetic"
[[ -d "$DATA" ]] || { echo "no default dataset at $DATA: run 'bench data synth' first" >&2; exit 2; }
for side in old sweep; do
  rm -rf "$OUT/$side"; mkdir -p "$OUT/$side/cache" "$OUT/$side/logs"
  ln -s "$DATA" "$OUT/$side/cache/synthetic"
done
export OUT
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
export PLATEBENCH_CACHE="$OUT/old/cache"
start=$(now_ms)
for method in $METHODS; do for split in batch_out source_out; do echo "$method $split"; done; done \
  | xargs -P 2 -L 1 sh -c 'bench run --method "$0" --split "$1" --seeds 0 --scenarios none --results "$OUT/old/results" \
      > "$OUT/old/logs/$0-$1.log" 2>&1 || echo "FAILED: $0 $1"'
old_ms=$(( $(now_ms) - start ))
export PLATEBENCH_CACHE="$OUT/sweep/cache"
start=$(now_ms)
bench sweep --methods "$(echo $METHODS | tr ' ' ',')" --seeds 0 --scenarios none -j 2 --results "$OUT/sweep/results" \
  --logs "$OUT/sweep/logs" > "$OUT/sweep/out.txt" 2>&1 || echo "bench sweep: some units failed ($OUT/sweep/out.txt)"
sweep_ms=$(( $(now_ms) - start ))
echo "old script: $(( old_ms / 1000 )) s; bench sweep: $(( sweep_ms / 1000 )) s; ratio $(( 100 * sweep_ms / old_ms )) %"
for side in old sweep; do echo "$side: $(find "$OUT/$side/results" -name 'fold*_seed*.json' | wc -l) records"; done
