"""`iot-lake dashboards quicksight-deploy`: the warehouse's marts in Amazon QuickSight, with boto3.

For AWS-native teams that use QuickSight instead of the self-hosted Superset (docs/dashboards.md).
One deploy puts in place, idempotently (a re-run updates, never duplicates, since every id is fixed):

- the Redshift data source `iot-lake-warehouse`, connected as the Superset side connects
  (the IOT_LAKE_REDSHIFT_* settings, the dashboards' read-only user first);
- one data set `iot-lake-<mart>` per mart the datasets of dashboards/ read, with their columns,
  read from the YAML so the two BI tools never drift apart (DIRECT_QUERY: no SPICE copy to refresh);
- the dashboard `iot-lake-<name>` from a template whose data set placeholders are named after marts.

Each is shared with one principal (a QuickSight user or group ARN) with the owner's actions.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml
from botocore.exceptions import ClientError

from iot_lake.dashboards import DASHBOARDS_DIR

DATA_SOURCE_ID = "iot-lake-warehouse"
ID_PREFIX = "iot-lake-"

# Superset's column types (as the Redshift and DuckDB dialects report them) -> QuickSight's.
TYPES = {
    "VARCHAR": "STRING",
    "TEXT": "STRING",
    "CHAR": "STRING",
    "CHARACTER VARYING": "STRING",
    "BIGINT": "INTEGER",
    "INTEGER": "INTEGER",
    "SMALLINT": "INTEGER",
    "FLOAT": "DECIMAL",
    "DOUBLE": "DECIMAL",
    "DOUBLE PRECISION": "DECIMAL",
    "REAL": "DECIMAL",
    "NUMERIC": "DECIMAL",
    "DECIMAL": "DECIMAL",
    "BOOLEAN": "BOOLEAN",
    "DATE": "DATETIME",
    "TIMESTAMP": "DATETIME",
    "TIMESTAMP WITHOUT TIME ZONE": "DATETIME",
    "TIMESTAMP WITH TIME ZONE": "DATETIME",
}

# What the principal may do with each resource: the owner's actions of QuickSight's console.
DATA_SOURCE_ACTIONS = [
    "quicksight:DescribeDataSource",
    "quicksight:DescribeDataSourcePermissions",
    "quicksight:PassDataSource",
    "quicksight:UpdateDataSource",
    "quicksight:DeleteDataSource",
    "quicksight:UpdateDataSourcePermissions",
]
DATA_SET_ACTIONS = [
    "quicksight:DescribeDataSet",
    "quicksight:DescribeDataSetPermissions",
    "quicksight:PassDataSet",
    "quicksight:DescribeIngestion",
    "quicksight:ListIngestions",
    "quicksight:UpdateDataSet",
    "quicksight:DeleteDataSet",
    "quicksight:CreateIngestion",
    "quicksight:CancelIngestion",
    "quicksight:UpdateDataSetPermissions",
]
DASHBOARD_ACTIONS = [
    "quicksight:DescribeDashboard",
    "quicksight:ListDashboardVersions",
    "quicksight:UpdateDashboardPermissions",
    "quicksight:QueryDashboard",
    "quicksight:UpdateDashboard",
    "quicksight:DeleteDashboard",
    "quicksight:DescribeDashboardPermissions",
    "quicksight:UpdateDashboardPublishedVersion",
]


class QuickSightError(RuntimeError):
    """A deploy that cannot go on (no template, a placeholder no mart fills, an unknown type)."""


@dataclass(frozen=True)
class Redshift:
    host: str
    port: int
    database: str
    user: str
    password: str
    schema: str


def redshift_from_env(env: Mapping[str, str] | None = None) -> Redshift:
    """The warehouse as iot_lake.dashboards.warehouse_for reads it in prod: same variables, same fallbacks."""
    env = os.environ if env is None else env
    missing = [v for v in ("IOT_LAKE_REDSHIFT_HOST", "IOT_LAKE_REDSHIFT_DATABASE") if not env.get(v)]
    user = env.get("IOT_LAKE_DASHBOARDS_REDSHIFT_USER") or env.get("IOT_LAKE_REDSHIFT_USER")
    password = env.get("IOT_LAKE_DASHBOARDS_REDSHIFT_PASSWORD") or env.get("IOT_LAKE_REDSHIFT_PASSWORD")
    missing += [] if user else ["IOT_LAKE_REDSHIFT_USER"]
    missing += [] if password else ["IOT_LAKE_REDSHIFT_PASSWORD"]
    if missing:
        raise QuickSightError(f"the Redshift connection needs {', '.join(missing)} (docs/production.md)")
    return Redshift(
        host=env["IOT_LAKE_REDSHIFT_HOST"],
        port=int(env.get("IOT_LAKE_REDSHIFT_PORT") or 5439),
        database=env["IOT_LAKE_REDSHIFT_DATABASE"],
        user=user,
        password=password,
        schema=f"{env.get('IOT_LAKE_REDSHIFT_SCHEMA') or 'analytics'}_marts",  # dbt_project/macros/schema.sql
    )


@dataclass(frozen=True)
class Mart:
    name: str
    columns: tuple[tuple[str, str], ...]  # (name, QuickSight type)


def _quicksight_type(mart: str, column: str, superset_type: str | None) -> str:
    base = (superset_type or "").upper().split("(")[0].strip()
    if base not in TYPES:
        raise QuickSightError(f"{mart}.{column}: no QuickSight type for {superset_type!r} (add it to TYPES)")
    return TYPES[base]


def marts(source: Path = DASHBOARDS_DIR) -> list[Mart]:
    """The marts the datasets of dashboards/ read, with their physical columns (not the computed ones)."""
    found = {}
    for path in sorted((source / "datasets").rglob("*.yaml")):
        spec = yaml.safe_load(path.read_text())
        if spec.get("sql"):  # a virtual dataset is a query, not a mart
            raise QuickSightError(f"{path}: a virtual dataset has no QuickSight counterpart yet")
        name = spec["table_name"]
        columns = tuple(
            (c["column_name"], _quicksight_type(name, c["column_name"], c.get("type")))
            for c in spec.get("columns") or []
            if not c.get("expression")
        )
        found[name] = Mart(name, columns)
    return [found[n] for n in sorted(found)]


def _permissions(principal: str, actions: list[str]) -> list[dict]:
    return [{"Principal": principal, "Actions": actions}]


def _exists(describe, **ids) -> bool:
    try:
        describe(**ids)
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ResourceNotFoundException":
            return False
        raise
    return True


def _template_ids(template_arn: str) -> tuple[str, str]:
    """arn:aws:quicksight:REGION:ACCOUNT:template/ID -> (ACCOUNT, ID): a template may be shared from
    another account."""
    parts = template_arn.split(":")
    if len(parts) != 6 or parts[2] != "quicksight" or not parts[5].startswith("template/"):
        raise QuickSightError(f"{template_arn} is not a QuickSight template ARN")
    return parts[4], parts[5].split("/", 1)[1]


@dataclass
class Deployer:
    """One deploy into one account: the client, the connection and who gets the resources."""

    client: object  # a boto3 QuickSight client
    account_id: str
    principal: str
    redshift: Redshift
    vpc_connection_arn: str | None = None

    def _ids(self, **ids) -> dict:
        return {"AwsAccountId": self.account_id, **ids}

    def data_source(self) -> str:
        """Create or update the Redshift data source; its ARN."""
        c = self.client
        spec = {
            "Name": "iot-lake warehouse (Redshift)",
            "DataSourceParameters": {
                "RedshiftParameters": {
                    "Host": self.redshift.host,
                    "Port": self.redshift.port,
                    "Database": self.redshift.database,
                }
            },
            "Credentials": {"CredentialPair": {"Username": self.redshift.user, "Password": self.redshift.password}},
            "SslProperties": {"DisableSsl": False},  # as Superset: verified TLS only
        }
        if self.vpc_connection_arn:  # a cluster in private subnets is reached through a VPC connection
            spec["VpcConnectionProperties"] = {"VpcConnectionArn": self.vpc_connection_arn}
        ids = self._ids(DataSourceId=DATA_SOURCE_ID)
        if _exists(c.describe_data_source, **ids):
            arn = c.update_data_source(**ids, **spec)["Arn"]
            c.update_data_source_permissions(**ids, GrantPermissions=_permissions(self.principal, DATA_SOURCE_ACTIONS))
            return arn
        return c.create_data_source(
            **ids, Type="REDSHIFT", **spec, Permissions=_permissions(self.principal, DATA_SOURCE_ACTIONS)
        )["Arn"]

    def data_set(self, mart: Mart, data_source_arn: str) -> str:
        """Create or update the data set over one mart; its ARN."""
        c = self.client
        spec = {
            "Name": mart.name,
            "PhysicalTableMap": {
                mart.name: {
                    "RelationalTable": {
                        "DataSourceArn": data_source_arn,
                        "Schema": self.redshift.schema,
                        "Name": mart.name,
                        "InputColumns": [{"Name": n, "Type": t} for n, t in mart.columns],
                    }
                }
            },
            # Queries go to Redshift on each view, as Superset's: nothing to refresh after a dbt run.
            "ImportMode": "DIRECT_QUERY",
        }
        ids = self._ids(DataSetId=ID_PREFIX + mart.name)
        if _exists(c.describe_data_set, **ids):
            arn = c.update_data_set(**ids, **spec)["Arn"]
            c.update_data_set_permissions(**ids, GrantPermissions=_permissions(self.principal, DATA_SET_ACTIONS))
            return arn
        return c.create_data_set(**ids, **spec, Permissions=_permissions(self.principal, DATA_SET_ACTIONS))["Arn"]

    def placeholders(self, template_arn: str) -> list[str]:
        """The template's data set placeholders; a clear error if the template is not there."""
        owner, template_id = _template_ids(template_arn)
        try:
            answer = self.client.describe_template(AwsAccountId=owner, TemplateId=template_id)
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code in ("ResourceNotFoundException", "AccessDeniedException"):
                raise QuickSightError(
                    f"template {template_arn} not found or not shared with account {self.account_id} ({code}): "
                    "create it from an analysis (create_template) or grant quicksight:DescribeTemplate on it"
                ) from None
            raise
        return [d["Placeholder"] for d in answer["Template"]["Version"].get("DataSetConfigurations", [])]

    def dashboard(self, name: str, template_arn: str, placeholders: list[str], data_sets: Mapping[str, str]) -> str:
        """Create or update (and publish) the dashboard from the template; its ARN."""
        c = self.client
        references = [{"DataSetPlaceholder": p, "DataSetArn": data_sets[p]} for p in placeholders]
        spec = {
            "Name": name,
            "SourceEntity": {"SourceTemplate": {"Arn": template_arn, "DataSetReferences": references}},
        }
        ids = self._ids(DashboardId=ID_PREFIX + _slug(name))
        if _exists(c.describe_dashboard, **ids):
            updated = c.update_dashboard(**ids, **spec)
            # An update makes a new version; viewers see the published one.
            version = int(updated["VersionArn"].rsplit("/", 1)[1])
            c.update_dashboard_published_version(**ids, VersionNumber=version)
            c.update_dashboard_permissions(**ids, GrantPermissions=_permissions(self.principal, DASHBOARD_ACTIONS))
            return updated["Arn"]
        return c.create_dashboard(**ids, **spec, Permissions=_permissions(self.principal, DASHBOARD_ACTIONS))["Arn"]


def _slug(name: str) -> str:
    return "-".join("".join(ch if ch.isalnum() else " " for ch in name.lower()).split())


@dataclass(frozen=True)
class Deployed:
    data_source: str
    data_sets: dict[str, str]  # mart -> ARN
    dashboard: str | None


def deploy(
    deployer: Deployer,
    template_arn: str | None,
    dashboard_name: str = "iot-lake fleet",
    source: Path = DASHBOARDS_DIR,
) -> Deployed:
    """Data source, then a data set per mart, then (given a template) the dashboard."""
    found = marts(source)  # first: a dataset YAML QuickSight cannot take fails before any change
    placeholders = deployer.placeholders(template_arn) if template_arn else []
    unknown = sorted(set(placeholders) - {m.name for m in found})
    if unknown:
        raise QuickSightError(f"the template's placeholders {unknown} name no mart of {source}/datasets")
    source_arn = deployer.data_source()
    data_sets = {m.name: deployer.data_set(m, source_arn) for m in found}
    dashboard = deployer.dashboard(dashboard_name, template_arn, placeholders, data_sets) if template_arn else None
    return Deployed(source_arn, data_sets, dashboard)
