#!/usr/bin/env bash
# The GPU check on a machine with no network (bench/gpu_check.py says what it checks).
#
# Such a machine has torch, transformers, peft and accelerate but not everything the engine and
# the TRL comparison import. Bring these as wheels, made on a machine with pip access, for the
# GPU machine's Python (3.12 here; change --python-version to match) and at the lock's versions:
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
#     -c constraints.txt -d .whl $(grep -v '^#' bench/gpu_wheels.txt)
#
# then run, from the repository root there:   bash bench/gpu_check.sh
# It installs .whl/*.whl into a private folder (never into the machine's Python), then runs the
# check; the table lands in $OUT when that is set, else in bench/results/gpu_check.md.
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-check-site .whl/*.whl
  export PYTHONPATH="/tmp/gpu-check-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec python3 -m bench.gpu_check "$@"
