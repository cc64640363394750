#!/usr/bin/env bash
# Install what the tests need (exact versions, constraints.txt) into the active virtual
# environment or .venv/, check that nothing is missing, then run the whole suite. Postgres and
# Redis come from RLHF_TEST_DATABASE_URL / RLHF_TEST_REDIS_URL when set, else throwaway local
# servers are started (tests/infra.py). Arguments are passed to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
bash scripts/install.sh "engine,test"
# The dashboard tests drive Debian's chromium headless (never a downloaded browser). Installed here
# when we are root on an apt system; with CI set, a missing browser fails those tests.
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  log=$(mktemp)
  if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >"$log" 2>&1; then
    echo "warning: could not install chromium (apt said, last lines):" >&2
    tail -n 15 "$log" >&2
  fi
  rm -f "$log"
fi
python -m tests.preflight engine test
# The linter first: it takes a second, and its configuration is [tool.ruff] in pyproject.toml.
python -m ruff check .
exec python -m pytest -q -p no:cacheprovider --timeout=900 "$@"
