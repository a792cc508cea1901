"""`iot-lake dashboards quicksight-deploy` at the boto3 boundary: botocore's Stubber for the exact
calls (moto has no templates, no describe/update of data sets), moto for the data source it does keep.

Every call the Stubber saw is checked against deploy/quicksight/deployer.policy.json.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import boto3
import pytest
import yaml
from botocore.awsrequest import AWSResponse
from botocore.stub import ANY, Stubber
from click.testing import CliRunner
from moto import mock_aws

from iot_lake import quicksight
from iot_lake.cli import main
from iot_lake.quicksight import DATA_SOURCE_ID, Deployer, QuickSightError, Redshift, deploy, marts
from tests.iam_audit import Policy, Request

REPO = Path(__file__).resolve().parent.parent
ACCOUNT = "123456789012"
REGION = "eu-west-1"
PRINCIPAL = f"arn:aws:quicksight:{REGION}:{ACCOUNT}:group/default/iot-lake-analysts"
TEMPLATE_ACCOUNT = "210987654321"  # shared from a design account
TEMPLATE = f"arn:aws:quicksight:{REGION}:{TEMPLATE_ACCOUNT}:template/iot-lake-fleet"
SOURCE_ARN = f"arn:aws:quicksight:{REGION}:{ACCOUNT}:datasource/{DATA_SOURCE_ID}"
DASHBOARD_ID = "iot-lake-iot-lake-fleet"
DASHBOARD_ARN = f"arn:aws:quicksight:{REGION}:{ACCOUNT}:dashboard/{DASHBOARD_ID}"
PLACEHOLDERS = ["fct_case", "mart_fleet_status", "mart_freshness"]
REDSHIFT_ENV = {
    "IOT_LAKE_REDSHIFT_HOST": "iot-lake.abc123.eu-west-1.redshift.amazonaws.com",
    "IOT_LAKE_REDSHIFT_DATABASE": "iot",
    "IOT_LAKE_REDSHIFT_USER": "dbt",
    "IOT_LAKE_REDSHIFT_PASSWORD": "dbt-secret",
    "IOT_LAKE_DASHBOARDS_REDSHIFT_USER": "dashboards_ro",
    "IOT_LAKE_DASHBOARDS_REDSHIFT_PASSWORD": "ro-secret",
    "IOT_LAKE_REDSHIFT_SCHEMA": "prod",
}
REDSHIFT = Redshift(REDSHIFT_ENV["IOT_LAKE_REDSHIFT_HOST"], 5439, "iot", "dashboards_ro", "ro-secret", "prod_marts")


@pytest.fixture(autouse=True)
def _fake_aws(fake_aws):
    """Fake credentials and no developer AWS config, so nothing here can reach a real account."""


def _not_found(stub: Stubber, method: str, **params) -> None:
    stub.add_client_error(method, "ResourceNotFoundException", http_status_code=404, expected_params=params)


def _data_set_arn(mart: str) -> str:
    return f"arn:aws:quicksight:{REGION}:{ACCOUNT}:dataset/iot-lake-{mart}"


def _yaml_marts() -> dict[str, list[str]]:
    """Independently of the module: each dataset YAML's table and its physical column names."""
    out = {}
    for path in (REPO / "dashboards" / "datasets").rglob("*.yaml"):
        spec = yaml.safe_load(path.read_text())
        out[spec["table_name"]] = [c["column_name"] for c in spec["columns"] if not c.get("expression")]
    return out


class Recorded:
    """The stubbed client and every (operation, params) the code sent through it."""

    def __init__(self):
        self.client = boto3.client("quicksight", region_name=REGION)
        self.stub = Stubber(self.client)
        self.calls: list[tuple[str, dict]] = []
        self.client.meta.events.register("before-parameter-build.quicksight", self._record)

    def _record(self, params, model, **_):
        self.calls.append((model.name, dict(params)))

    def deployer(self) -> Deployer:
        return Deployer(self.client, ACCOUNT, PRINCIPAL, REDSHIFT)


def _expect_template(stub: Stubber) -> None:
    configurations = [{"Placeholder": p, "DataSetSchema": {"ColumnSchemaList": []}} for p in PLACEHOLDERS]
    stub.add_response(
        "describe_template",
        {
            "Template": {
                "Arn": TEMPLATE,
                "TemplateId": "iot-lake-fleet",
                "Version": {"DataSetConfigurations": configurations},
            }
        },
        {"AwsAccountId": TEMPLATE_ACCOUNT, "TemplateId": "iot-lake-fleet"},
    )


EXPECTED_SOURCE = {
    "AwsAccountId": ACCOUNT,
    "DataSourceId": DATA_SOURCE_ID,
    "Name": "iot-lake warehouse (Redshift)",
    "DataSourceParameters": {
        "RedshiftParameters": {"Host": REDSHIFT_ENV["IOT_LAKE_REDSHIFT_HOST"], "Port": 5439, "Database": "iot"}
    },
    # The dashboards' read-only user, not dbt's.
    "Credentials": {"CredentialPair": {"Username": "dashboards_ro", "Password": "ro-secret"}},
    "SslProperties": {"DisableSsl": False},
}


def _data_set_params(mart: str) -> dict:
    return {
        "AwsAccountId": ACCOUNT,
        "DataSetId": f"iot-lake-{mart}",
        "Name": mart,
        "PhysicalTableMap": {
            mart: {
                "RelationalTable": {
                    "DataSourceArn": SOURCE_ARN,
                    "Schema": "prod_marts",
                    "Name": mart,
                    "InputColumns": ANY,
                }
            }
        },
        "ImportMode": "DIRECT_QUERY",
    }


def _dashboard_params() -> dict:
    references = [{"DataSetPlaceholder": p, "DataSetArn": _data_set_arn(p)} for p in PLACEHOLDERS]
    return {
        "AwsAccountId": ACCOUNT,
        "DashboardId": DASHBOARD_ID,
        "Name": "iot-lake fleet",
        "SourceEntity": {"SourceTemplate": {"Arn": TEMPLATE, "DataSetReferences": references}},
    }


def _grant(actions) -> dict:
    return {"GrantPermissions": [{"Principal": PRINCIPAL, "Actions": actions}]}


def _expect_first_deploy(stub: Stubber) -> None:
    _expect_template(stub)
    _not_found(stub, "describe_data_source", AwsAccountId=ACCOUNT, DataSourceId=DATA_SOURCE_ID)
    stub.add_response(
        "create_data_source",
        {"Arn": SOURCE_ARN},
        {**EXPECTED_SOURCE, "Type": "REDSHIFT", "Permissions": [{"Principal": PRINCIPAL, "Actions": ANY}]},
    )
    for mart in sorted(_yaml_marts()):
        _not_found(stub, "describe_data_set", AwsAccountId=ACCOUNT, DataSetId=f"iot-lake-{mart}")
        params = {**_data_set_params(mart), "Permissions": [{"Principal": PRINCIPAL, "Actions": ANY}]}
        stub.add_response("create_data_set", {"Arn": _data_set_arn(mart)}, params)
    _not_found(stub, "describe_dashboard", AwsAccountId=ACCOUNT, DashboardId=DASHBOARD_ID)
    params = {**_dashboard_params(), "Permissions": [{"Principal": PRINCIPAL, "Actions": ANY}]}
    stub.add_response("create_dashboard", {"Arn": DASHBOARD_ARN}, params)


def test_first_deploy_through_the_cli_creates_each_resource_once(monkeypatch):
    for var, value in REDSHIFT_ENV.items():
        monkeypatch.setenv(var, value)
    rec = Recorded()
    _expect_first_deploy(rec.stub)
    monkeypatch.setattr(boto3, "client", lambda service, region_name, **kwargs: rec.client)
    args = ["--account-id", ACCOUNT, "--region", REGION, "--principal", PRINCIPAL, "--template-arn", TEMPLATE]
    with rec.stub:
        result = CliRunner().invoke(main, ["dashboards", "quicksight-deploy", *args])
        assert result.exit_code == 0, result.output + repr(result.exception)
        rec.stub.assert_no_pending_responses()
    assert f"dashboard {DASHBOARD_ARN}" in result.output
    creates = [op for op, _ in rec.calls if op.startswith("Create")]
    assert creates == ["CreateDataSource"] + ["CreateDataSet"] * len(_yaml_marts()) + ["CreateDashboard"]


def test_every_mart_of_the_dashboards_has_a_data_set_with_its_columns():
    rec = Recorded()
    _expect_first_deploy(rec.stub)
    with rec.stub:
        done = deploy(rec.deployer(), TEMPLATE)
    expected = _yaml_marts()
    assert set(done.data_sets) == set(expected) >= set(PLACEHOLDERS)
    sent = {
        p["Name"]: p["PhysicalTableMap"][p["Name"]]["RelationalTable"] for op, p in rec.calls if op == "CreateDataSet"
    }
    for mart, columns in expected.items():
        assert [c["Name"] for c in sent[mart]["InputColumns"]] == columns
    freshness = {c["Name"]: c["Type"] for c in sent["mart_freshness"]["InputColumns"]}
    assert freshness == {"layer": "STRING", "latest_at": "DATETIME", "row_count": "INTEGER"}


def test_a_new_dataset_yaml_gets_its_data_set(tmp_path):
    # Another engineer adds a dashboard over a new mart: the deploy follows without a code change.
    shutil.copytree(REPO / "dashboards", tmp_path / "dashboards")
    extra = tmp_path / "dashboards" / "datasets" / "warehouse" / "mart_model_quality.yaml"
    extra.write_text(
        "table_name: mart_model_quality\nschema: '{{ marts_schema }}'\nsql: null\n"
        "columns:\n- column_name: training_day\n  type: DATE\n- column_name: mase\n  type: DOUBLE PRECISION\n"
        "- column_name: coverage\n  type: NUMERIC(5, 3)\n"
    )
    found = {m.name: m.columns for m in marts(tmp_path / "dashboards")}
    assert found["mart_model_quality"] == (("training_day", "DATETIME"), ("mase", "DECIMAL"), ("coverage", "DECIMAL"))
    assert set(found) == set(_yaml_marts()) | {"mart_model_quality"}


def test_an_unknown_column_type_stops_before_any_call(tmp_path):
    shutil.copytree(REPO / "dashboards", tmp_path / "dashboards")
    path = tmp_path / "dashboards" / "datasets" / "warehouse" / "mart_freshness.yaml"
    path.write_text(path.read_text().replace("type: VARCHAR", "type: GEOMETRY", 1))
    rec = Recorded()
    with rec.stub, pytest.raises(QuickSightError, match="mart_freshness.layer: no QuickSight type for 'GEOMETRY'"):
        deploy(rec.deployer(), TEMPLATE, source=tmp_path / "dashboards")
    assert rec.calls == []


def test_redeploy_updates_and_never_creates():
    rec = Recorded()
    stub = rec.stub
    _expect_template(stub)
    ids = {"AwsAccountId": ACCOUNT, "DataSourceId": DATA_SOURCE_ID}
    stub.add_response("describe_data_source", {"DataSource": {"Arn": SOURCE_ARN}}, ids)
    stub.add_response("update_data_source", {"Arn": SOURCE_ARN}, EXPECTED_SOURCE)
    stub.add_response("update_data_source_permissions", {}, {**ids, **_grant(quicksight.DATA_SOURCE_ACTIONS)})
    for mart in sorted(_yaml_marts()):
        ids = {"AwsAccountId": ACCOUNT, "DataSetId": f"iot-lake-{mart}"}
        stub.add_response("describe_data_set", {"DataSet": {"Arn": _data_set_arn(mart)}}, ids)
        stub.add_response("update_data_set", {"Arn": _data_set_arn(mart)}, _data_set_params(mart))
        stub.add_response("update_data_set_permissions", {}, {**ids, **_grant(quicksight.DATA_SET_ACTIONS)})
    ids = {"AwsAccountId": ACCOUNT, "DashboardId": DASHBOARD_ID}
    stub.add_response("describe_dashboard", {"Dashboard": {"Arn": DASHBOARD_ARN}}, ids)
    stub.add_response(
        "update_dashboard", {"Arn": DASHBOARD_ARN, "VersionArn": f"{DASHBOARD_ARN}/version/4"}, _dashboard_params()
    )
    stub.add_response("update_dashboard_published_version", {}, {**ids, "VersionNumber": 4})
    stub.add_response("update_dashboard_permissions", {}, {**ids, **_grant(quicksight.DASHBOARD_ACTIONS)})
    with stub:
        done = deploy(rec.deployer(), TEMPLATE)
        stub.assert_no_pending_responses()
    assert done.dashboard == DASHBOARD_ARN
    assert not [op for op, _ in rec.calls if op.startswith("Create")]


def test_a_missing_template_is_a_clear_error_before_any_change(monkeypatch):
    for var, value in REDSHIFT_ENV.items():
        monkeypatch.setenv(var, value)
    rec = Recorded()
    rec.stub.add_client_error("describe_template", "ResourceNotFoundException", http_status_code=404)
    monkeypatch.setattr(boto3, "client", lambda service, region_name, **kwargs: rec.client)
    args = ["--account-id", ACCOUNT, "--region", REGION, "--principal", PRINCIPAL, "--template-arn", TEMPLATE]
    with rec.stub:
        result = CliRunner().invoke(main, ["dashboards", "quicksight-deploy", *args])
    assert result.exit_code == 1
    assert f"template {TEMPLATE} not found or not shared with account {ACCOUNT}" in result.output
    assert [op for op, _ in rec.calls] == ["DescribeTemplate"]


def test_a_template_placeholder_no_mart_fills_is_refused():
    rec = Recorded()
    configurations = [{"Placeholder": "fct_weather"}, {"Placeholder": "fct_case"}]
    rec.stub.add_response(
        "describe_template", {"Template": {"Arn": TEMPLATE, "Version": {"DataSetConfigurations": configurations}}}
    )
    with rec.stub, pytest.raises(QuickSightError, match=r"placeholders \['fct_weather'\] name no mart"):
        deploy(rec.deployer(), TEMPLATE)


def test_the_connection_comes_from_the_environment_with_the_dashboards_user_first():
    assert quicksight.redshift_from_env(REDSHIFT_ENV) == REDSHIFT
    dbt_only = {k: v for k, v in REDSHIFT_ENV.items() if "DASHBOARDS" not in k and "SCHEMA" not in k}
    fallback = quicksight.redshift_from_env(dbt_only)
    assert (fallback.user, fallback.password, fallback.schema) == ("dbt", "dbt-secret", "analytics_marts")
    with pytest.raises(QuickSightError, match="IOT_LAKE_REDSHIFT_HOST"):
        quicksight.redshift_from_env({"IOT_LAKE_REDSHIFT_USER": "u", "IOT_LAKE_REDSHIFT_PASSWORD": "p"})


# --------------------------------------------------------------------------------------------
# IAM: every call the deploy makes is one the deployer policy allows
# --------------------------------------------------------------------------------------------


def _arn(kind: str, resource_id: str, account: str = ACCOUNT) -> str:
    return f"arn:aws:quicksight:{REGION}:{account}:{kind}/{resource_id}"


RESOURCE_OF = {
    "DataSourceId": "datasource",
    "DataSetId": "dataset",
    "DashboardId": "dashboard",
    "TemplateId": "template",
}


def iam_requests(operation: str, params: dict) -> list[Request]:
    """The IAM requests a QuickSight call makes: its action on its resource, plus the Pass* on what
    it hands on (a data set passes its data source, a dashboard its data sets) and, for a dashboard
    from a template, DescribeTemplate on the template (QuickSight's documented requirements)."""
    call = f"quicksight.{operation}"
    key = next(k for k in RESOURCE_OF if k in params)
    out = [Request(f"quicksight:{operation}", _arn(RESOURCE_OF[key], params[key], params["AwsAccountId"]), (), call)]
    for table in params.get("PhysicalTableMap", {}).values():
        out.append(Request("quicksight:PassDataSource", table["RelationalTable"]["DataSourceArn"], (), call))
    template = params.get("SourceEntity", {}).get("SourceTemplate")
    if template:
        out.append(Request("quicksight:DescribeTemplate", template["Arn"], (), call))
        out += [Request("quicksight:PassDataSet", r["DataSetArn"], (), call) for r in template["DataSetReferences"]]
    return out


def _policy() -> Policy:
    text = (REPO / "deploy" / "quicksight" / "deployer.policy.json").read_text()
    values = {"${Region}": REGION, "${AccountId}": ACCOUNT, "${TemplateAccountId}": TEMPLATE_ACCOUNT}
    for mark, value in values.items():
        text = text.replace(mark, value)
    return Policy(json.loads(text))


def test_the_deployer_policy_allows_every_call_of_a_first_deploy_and_a_redeploy():
    calls = []
    rec = Recorded()
    _expect_first_deploy(rec.stub)
    with rec.stub:
        deploy(rec.deployer(), TEMPLATE)
    calls += rec.calls
    rec = Recorded()
    rec.stub.add_response("describe_dashboard", {"Dashboard": {"Arn": DASHBOARD_ARN}})
    rec.stub.add_response("update_dashboard", {"Arn": DASHBOARD_ARN, "VersionArn": f"{DASHBOARD_ARN}/version/2"})
    rec.stub.add_response("update_dashboard_published_version", {})
    rec.stub.add_response("update_dashboard_permissions", {})
    refs = {p: _data_set_arn(p) for p in PLACEHOLDERS}
    with rec.stub:
        rec.deployer().dashboard("iot-lake fleet", TEMPLATE, PLACEHOLDERS, refs)
    calls += rec.calls
    operations = {op for op, _ in calls}
    assert {"CreateDataSource", "CreateDataSet", "CreateDashboard", "UpdateDashboard", "DescribeTemplate"} <= operations
    policy = _policy()
    denied = [r for op, params in calls for r in iam_requests(op, params) if not policy.allows(r)]
    assert denied == []
    # And it is no wider than the deploy: nothing outside the iot-lake resources.
    assert not policy.allows(Request("quicksight:UpdateDataSet", _arn("dataset", "finance-ledger")))
    assert not policy.allows(Request("quicksight:DeleteDashboard", DASHBOARD_ARN))


# --------------------------------------------------------------------------------------------
# moto: the data source it keeps (it has no templates, no describe/update of data sets and no
# UpdateDataSourcePermissions, answered here at the same boundary the Stubber uses)
# --------------------------------------------------------------------------------------------


def _permissions_granted(model, params, **_):
    granted.append(params["url_path"].split("/")[-2])
    return AWSResponse(None, 200, {}, None), {"Status": 200, "ResponseMetadata": {"HTTPStatusCode": 200}}


granted: list[str] = []


@mock_aws
def test_the_data_source_is_updated_in_place_on_a_second_deploy():
    client = boto3.client("quicksight", region_name=REGION)
    client.meta.events.register("before-call.quicksight.UpdateDataSourcePermissions", _permissions_granted)
    granted.clear()
    first = Deployer(client, ACCOUNT, PRINCIPAL, REDSHIFT).data_source()
    moved = Redshift(
        "iot-lake-2.abc123.eu-west-1.redshift.amazonaws.com", 5439, "iot", "dashboards_ro", "x", "prod_marts"
    )
    second = Deployer(client, ACCOUNT, PRINCIPAL, moved).data_source()
    assert first == second
    listed = client.list_data_sources(AwsAccountId=ACCOUNT)["DataSources"]
    assert [s["DataSourceId"] for s in listed] == [DATA_SOURCE_ID]
    source = client.describe_data_source(AwsAccountId=ACCOUNT, DataSourceId=DATA_SOURCE_ID)["DataSource"]
    assert source["DataSourceParameters"]["RedshiftParameters"]["Host"] == moved.host
    assert granted == [DATA_SOURCE_ID]  # on the update only: the create carried its permissions
