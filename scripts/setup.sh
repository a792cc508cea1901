#!/usr/bin/env bash
# Sets up a fresh machine (only Python 3.11 needed): .venv with everything installed.
#   scripts/setup.sh          the platform and its tools
#   scripts/setup.sh --test   also the PostgreSQL server the test suite starts (Debian package)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check "uv>=0.5"
.venv/bin/uv pip install --quiet --python .venv/bin/python -e '.[dev]'

if [ "${1:-}" = "--test" ]; then
  # The Postgres extract tests start a real server; install it where we can (root on Debian).
  if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
        || echo "setup: could not install postgresql; the Postgres tests will be skipped" >&2
    else
      echo "setup: no PostgreSQL server found; install Debian's postgresql to run the Postgres tests" >&2
    fi
  fi
fi
