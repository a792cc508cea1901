"""Superset's production overrides, read last by the config `iot-lake dashboards up` writes when
IOT_LAKE_ENV=prod (or from $IOT_LAKE_SUPERSET_CONFIG). The warehouse connection is not here: the
import fills it from the IOT_LAKE_REDSHIFT_* settings (docs/dashboards.md, "In production").
"""

import os

# The metadata database (users, the admin's hash, the imported dashboards): PostgreSQL when given,
# so it outlives the host; else the SQLite file in the state directory.
if os.environ.get("IOT_LAKE_SUPERSET_METADATA_URL"):
    SQLALCHEMY_DATABASE_URI = os.environ["IOT_LAKE_SUPERSET_METADATA_URL"]

# Behind the reverse proxy that guards the Dagster UI: links and redirects use its scheme and host.
ENABLE_PROXY_FIX = True
# No anonymous dashboards, and no connection to local files (sqlite:, duckdb:) from the UI.
PUBLIC_ROLE_LIKE = None
PREVENT_UNSAFE_DB_CONNECTIONS = True
# A chart's Redshift query is stopped after two minutes rather than holding a WLM slot.
SQLLAB_TIMEOUT = 120
SUPERSET_WEBSERVER_TIMEOUT = 120
