#!/usr/bin/env bash
# Sets up a fresh machine (only Python 3.11 needed): .venv with everything installed.
#   scripts/setup.sh          the platform and its tools, and .venv-superset for `iot-lake dashboards`
#   scripts/setup.sh --test   also the PostgreSQL server the test suite starts and Chromium for the UI
#                             screenshot (Debian packages), and
#                             .venv-jvm, classic PySpark for the JVM parity test (tests/test_jvm_parity.py),
#                             and the CDK CLI in deploy/cdk/node_modules (npm ci; tests/test_cdk_stack.py)
#                             and autocannon in benchmarks/api/loadgen/node_modules (npm ci; benchmarks/api)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check "uv>=0.5"
# Exactly the versions in uv.lock, the ones CI tested (`uv lock` after changing pyproject.toml's
# dependencies; tests/test_style.py fails while the lock is out of date).
# --compile-bytecode: every run starts fresh processes (Spark job scripts, the SageMaker twins, dbt)
# that import the same libraries; without .pyc files each compiles them from source again, ~3 s for
# LightGBM and mlforecast alone, and never caches them where PYTHONDONTWRITEBYTECODE is set (as here).
.venv/bin/uv sync --quiet --frozen --extra dev --compile-bytecode
# The dbt manifest Dagster loads the warehouse assets from (dbt_project/target/, not in git): parsed
# once here, offline, so loading the definitions never waits for dbt.
DBT_SEND_ANONYMOUS_USAGE_STATS=false .venv/bin/dbt parse --quiet --project-dir dbt_project --profiles-dir dbt_project \
  --target local --target-path target

# Apache Superset for `iot-lake dashboards` (docs/dashboards.md), in a venv of its own: its pins clash
# with the platform's (scripts/superset-requirements.txt says how). A no-op when already installed.
if [ ! -x .venv-superset/bin/python ]; then
  .venv/bin/uv venv --quiet --python "$PY" .venv-superset
fi
.venv/bin/uv pip install --quiet --compile-bytecode --python .venv-superset/bin/python \
  -r scripts/superset-requirements.txt

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

  # The UI test screenshots the asset graph with a headless Chromium (Debian's, never a downloaded one).
  if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "setup: could not install chromium; the UI screenshot test will be skipped" >&2
    else
      echo "setup: no /usr/bin/chromium; install Debian's chromium to run the UI screenshot test" >&2
    fi
  fi

  # The CDK CLI for deploy/cdk (tests/test_cdk_stack.py runs `cdk synth` with it; ~30 MB from npm,
  # pinned by deploy/cdk/package-lock.json). Without node/npm the test synthesizes through the app.
  if command -v npm >/dev/null; then
    (cd deploy/cdk && npm ci --no-audit --no-fund --silent) \
      || echo "setup: could not install the CDK CLI; tests/test_cdk_stack.py synthesizes without it" >&2
    # The API benchmark's load generator (autocannon, pinned by its package-lock.json): a Python one
    # tops out near the rate the benchmark needs on 2 cores (benchmarks/api/run.py).
    (cd benchmarks/api/loadgen && npm ci --no-audit --no-fund --silent) \
      || echo "setup: could not install autocannon; benchmarks/api cannot run" >&2
  else
    echo "setup: no npm; tests/test_cdk_stack.py synthesizes the stack without the CDK CLI, and benchmarks/api cannot run" >&2
  fi

  # Classic (JVM) PySpark conflicts with pyspark-client in .venv, so it gets a venv of its own holding
  # just it and the data plane. PyPI has pyspark only as a ~450 MB sdist, which uv downloads and
  # rebuilds on every install (adding ~1.4 GB to its cache each time): build the wheel once per user.
  PYSPARK_JVM='pyspark>=4.2,<4.3'
  WHEELS="${XDG_CACHE_HOME:-$HOME/.cache}/iot-lake/wheels"
  wheel=$(ls -t "$WHEELS"/pyspark-4.2.*-py2.py3-none-any.whl 2>/dev/null | head -n 1 || true)
  if [ -z "$wheel" ]; then
    mkdir -p "$WHEELS"
    build=$(mktemp -d "$WHEELS/.build.XXXXXX")
    .venv/bin/python -m pip wheel --quiet --disable-pip-version-check --no-cache-dir --no-deps \
      -w "$build" "$PYSPARK_JVM"
    mv "$build"/pyspark-*.whl "$WHEELS"/ && rmdir "$build"
    wheel=$(ls -t "$WHEELS"/pyspark-4.2.*-py2.py3-none-any.whl | head -n 1)
  fi
  if [ ! -x .venv-jvm/bin/python ]; then
    .venv/bin/uv venv --quiet --python "$PY" .venv-jvm
  fi
  .venv/bin/uv pip install --quiet --compile-bytecode --python .venv-jvm/bin/python "$wheel" -e .
  command -v java >/dev/null || echo "setup: no java on PATH; the JVM parity test needs a JDK 17+" >&2
fi
