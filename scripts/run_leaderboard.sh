#!/usr/bin/env bash
# Regenerate the default leaderboard: every method x split (all folds, seeds 0,1,2) on the
# default synthetic dataset, then rebuild leaderboard/LEADERBOARD.md.
# Runs JOBS `bench run` processes at a time (default 2: one per core; the ResNet methods
# train on one thread each). Finished records are skipped, so a rerun resumes.
set -euo pipefail
# Longest runs first (CS-ARM-BN: 96 images per step, BEN: 64), so that the two processes finish together.
# ERM before AdaBN / TENT / DeYO / ROID: they load its cached model (benchmark/core/source_cache.py).
# arm_cml is left out of the CPU default: its context network makes a run ~3 min (METHODS=arm_cml to add it).
METHODS="${METHODS:-ben cs_arm_bn arm_bn deep_coral dann erm adabn tent deyo roid fm_tvn intensity_stats}"
JOBS="${JOBS:-2}"
bench data synth > /dev/null
for method in $METHODS; do
  for split in batch_out source_out; do echo "$method $split"; done  # batch_out has 5 folds, source_out 4
done | xargs -P "$JOBS" -L 1 sh -c 'bench run --method "$0" --split "$1" > "leaderboard/logs/$0-$1.log" 2>&1 || echo "FAILED: $0 $1 (see leaderboard/logs/$0-$1.log)"'
bench leaderboard
