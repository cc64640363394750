#!/usr/bin/env bash
# The main job on the embedded default stack (SQLite + a serverless broker, no servers to install):
# start the API and a worker, train a DPO adapter on smollm2-135m-instruct with the bundled dataset
# through the HTTP API, download it, print an answer before and after, and chat with the base and the
# fine-tuned model through /v1/chat/completions (python -m worker.serve). Installs into the
# active virtual environment, else into .venv/ (scripts/venv.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
bash scripts/install.sh engine,demo
exec python scripts/demo.py "$@"
