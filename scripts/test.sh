#!/usr/bin/env bash
# Install what the tests need, then run them. Postgres and Redis come from RLHF_TEST_DATABASE_URL /
# RLHF_TEST_REDIS_URL when set, else throwaway local servers are started (tests/infra.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh "engine,test"
exec python -m pytest -q -p no:cacheprovider --timeout=900 "$@"
