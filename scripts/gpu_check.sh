#!/usr/bin/env bash
# GPU checks of platebench's CUDA path (issue 15, item 3), in one unattended run of under 10 minutes.
#
#   scripts/gpu_check.sh [REPORT.md] [--cpu-smoke] [--budget S] [--only STAGES] [--keep-workdir]
#
# Writes a markdown report (default docs/gpu_report.md; also $OUT/gpu_report.md when $OUT is set) with the GPU,
# torch / CUDA / cuDNN versions and every measurement with its settings: packed store vs one TIFF per site,
# ResNet-50 training images/s in bf16 + channels-last, the data-wait share of a step, `bench run --preset paper`
# on a small simulated dataset, peak GPU memory. Each stage runs in its own process with its own time box; a
# failure is written into the report and the other stages go on. Nothing is downloaded: run it from an installed
# checkout (pip install -e .); the simulated dataset goes to $PLATEBENCH_CACHE (default ~/.cache/platebench),
# so a second run skips generating it. --cpu-smoke runs the same stages on the CPU at tiny sizes.
# Exit code: 0 when every stage finished, 1 when one did not (the report says which and why), 2 for a broken setup.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

if [ -n "${PYTHON:-}" ]; then
  py=$PYTHON
elif [ -z "${VIRTUAL_ENV:-}" ] && [ -x .venv/bin/python ]; then
  py=.venv/bin/python
else
  py=python3
fi
check='import importlib.util as u, sys
missing = [m for m in ("torch", "timm", "tifffile", "benchmark.gpu_check") if u.find_spec(m) is None]
sys.exit("missing: " + ", ".join(missing) if missing else 0)'
if ! "$py" -c "$check"; then
  echo "error: $py lacks what the checks need; install platebench with" \
       "'python3 -m venv .venv && .venv/bin/pip install -e .' (or set PYTHON=/path/to/python)" >&2
  exit 2
fi
export PYTHONUNBUFFERED=1
# the run keeps to its own budget (540 s); this outer limit only guards against a hang of the parent itself
exec timeout --kill-after=15 600 "$py" -m benchmark.gpu_check "$@"
