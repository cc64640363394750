#!/usr/bin/env bash
# Install what the tests need, then run them. Postgres and Redis come from RLHF_TEST_DATABASE_URL /
# RLHF_TEST_REDIS_URL when set, else throwaway local servers are started (tests/infra.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh "engine,test"
# The dashboard tests drive Debian's chromium headless (never a downloaded browser); they skip
# without it. Installed here when we are root on an apt system.
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 \
    || echo "note: could not install chromium; the dashboard tests will be skipped" >&2
fi
exec python -m pytest -q -p no:cacheprovider --timeout=900 "$@"
