#!/usr/bin/env bash
# Builds the packed Python environment the EMR modes run with, and uploads it:
#   deploy/spark-env/build.sh s3://BUCKET/spark-env/iot-lake-env-YYYYMMDD.tar.gz
# then point IOT_LAKE_SPARK_ENV_ARCHIVE at that URI. Needs Docker (BuildKit), the AWS CLI and the
# repo's .venv (scripts/setup.sh). Rebuild when the data plane's dependencies change; the code itself
# is not in the archive (SparkRunner publishes it per version under <lake>/_code/).
set -euo pipefail
target=${1:?usage: deploy/spark-env/build.sh s3://BUCKET/PATH/iot-lake-env.tar.gz}
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
# The same pins Glue installs per run: the data plane's dependencies at the control plane's versions.
.venv/bin/python -c "from lib.code_publishing import cluster_requirements; print(*cluster_requirements(), sep='\n')" \
  > "$here/requirements.txt"
DOCKER_BUILDKIT=1 docker build --output "$here/out" "$here"
aws s3 cp "$here/out/iot-lake-env.tar.gz" "$target"
echo "IOT_LAKE_SPARK_ENV_ARCHIVE=$target"
