# Sourced by the scripts in this folder: run in the active virtual environment, else in the
# project's own .venv/ (made on first use). A fresh Debian refuses `pip install` into the system
# Python (externally managed), and a fresh environment is what proves that no install step is
# missing, so the scripts never install into whatever Python the machine happens to have.
if [ -z "${VIRTUAL_ENV:-}" ]; then
  if [ ! -f .venv/bin/activate ]; then
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
      || { echo "error: Python 3.10 or newer is needed; python3 is $(python3 --version 2>&1)" >&2; exit 1; }
    if ! python3 -m venv .venv 2>/dev/null; then
      rm -rf .venv
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then  # Debian ships venv separately
        echo "installing python3-venv (apt) to make .venv/" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      fi
      python3 -m venv .venv \
        || { echo "error: 'python3 -m venv .venv' failed; on Debian/Ubuntu: apt-get install python3-venv" >&2; exit 1; }
    fi
    echo "made the virtual environment .venv/ (activate it with: source .venv/bin/activate)" >&2
  fi
  # shellcheck disable=SC1091
  source .venv/bin/activate
fi
