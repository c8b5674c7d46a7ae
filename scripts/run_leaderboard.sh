#!/usr/bin/env bash
# Regenerate the default leaderboard: every method x split (all folds, seeds 0,1,2) on the
# default synthetic dataset, then rebuild leaderboard/LEADERBOARD.md.
#
# One `bench sweep`: every (method, split, fold, seed) is its own unit in its own process, JOBS
# at a time (default 2: one per core; the ResNet methods train on one thread each), longest first,
# ERM of a fold and seed before AdaBN / TENT / DeYO / ROID of the same fold and seed (they load its
# cached model, benchmark/core/training/model_cache.py). Finished records are skipped, so a rerun resumes;
# each unit logs to leaderboard/logs/<method>-<split>-fold<k>-seed<s>.log.
#
# METHODS (space- or comma-separated) replaces the default list, which lives in one place:
# benchmark/sweep/grid.py (DEFAULT_METHODS; arm_cml is left out of it, a CPU run takes ~3 min).
# Further arguments go to `bench sweep`, e.g. `scripts/run_leaderboard.sh --executor slurm
# --slurm-config slurm.toml` (docs/cluster.md).
set -euo pipefail
JOBS="${JOBS:-2}"
methods=()
if [[ -n "${METHODS:-}" ]]; then
  methods=(--methods "$(echo "$METHODS" | tr -s ' ,' ',' | sed 's/^,//; s/,$//')")
fi
status=0
bench sweep "${methods[@]}" --jobs "$JOBS" "$@" || status=$?  # failed units are listed; the table is rebuilt anyway
bench leaderboard
exit "$status"
