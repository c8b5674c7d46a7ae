#!/usr/bin/env bash
# Regenerate the default leaderboard: every method x split (all folds, seeds 0,1,2) on the
# default synthetic dataset, then rebuild leaderboard/LEADERBOARD.md.
# Runs JOBS `bench run` processes at a time (default 2: one per core; the ResNet methods
# train on one thread each). Finished records are skipped, so a rerun resumes.
set -euo pipefail
METHODS="${METHODS:-erm cs_arm_bn arm_bn fm_tvn ben adabn}"
JOBS="${JOBS:-2}"
bench data synth > /dev/null
for method in $METHODS; do
  for split in source_out batch_out; do echo "$method $split"; done
done | xargs -P "$JOBS" -L 1 sh -c 'bench run --method "$0" --split "$1" > "leaderboard/logs/$0-$1.log" 2>&1 || echo "FAILED: $0 $1 (see leaderboard/logs/$0-$1.log)"'
bench leaderboard
