#!/usr/bin/env bash
# The main job on the embedded default stack (SQLite + a serverless broker, no servers to install):
# start the API and a worker, train a DPO adapter on smollm2-135m-instruct with the bundled dataset
# through the HTTP API, download it, and print an answer before and after. Installs into the
# active virtual environment, else into .venv/ (scripts/venv.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
bash scripts/install.sh engine
exec python scripts/demo.py "$@"
