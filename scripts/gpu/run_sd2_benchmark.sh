#!/usr/bin/env bash
# The sd2 benchmark on the GPU machine: install the carried wheels, then run scripts/gpu/benchmark_sd2.py.
#
#   here, once:    scripts/gpu/fetch_wheels.sh
#   device tool:   run  command="bash scripts/gpu/run_sd2_benchmark.sh"  carry=[".whl"]  timeout_s=540
#
# Runs the chat benchmark (benchmark_sd2.py), then the training one (benchmark_sd2_training.py). Arguments
# go to benchmark_sd2.py (e.g. --repeats 3); TRAINING_ARGS to the training one. The tables and the log come
# back under $OUT (sd2_benchmark.json, sd2_training_benchmark.json, sd2_benchmark.log). PYTHON picks the
# interpreter (default python3, the one with torch).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
python="${PYTHON:-python3}"

"$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1

log="${OUT:-/tmp}/sd2_benchmark.log"
{
  "$python" -c 'import diffusers, torch, transformers; print("diffusers", diffusers.__version__, "transformers", transformers.__version__, "torch", torch.__version__)'
  if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; fi
  "$python" scripts/gpu/benchmark_sd2.py "$@"
  # shellcheck disable=SC2086  # TRAINING_ARGS is a list of words
  "$python" scripts/gpu/benchmark_sd2_training.py ${TRAINING_ARGS:-}
} 2>&1 | tee "$log"
