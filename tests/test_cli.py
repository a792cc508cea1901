"""`iot-lake simulate` as a user calls it."""

from __future__ import annotations

import sqlalchemy as sa
from click.testing import CliRunner

from iot_lake.cli import main
from iot_lake.lake import TELEMETRY_PREFIX, Lake


def test_simulate_into_a_lake_seeds_the_historian(tmp_path):
    result = CliRunner().invoke(
        main,
        [
            "simulate",
            "--devices",
            "3",
            "--days",
            "0.25",
            "--start",
            "2026-11-20",
            "--seed",
            "9",
            "--history-days",
            "1",
            "--lake",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert len(list(Lake(str(tmp_path)).list(TELEMETRY_PREFIX))) == 6 * 12
    engine = sa.create_engine(f"sqlite:///{tmp_path}/_sources/historian.sqlite")
    with engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from devices")).scalar() == 3
        assert conn.execute(sa.text("select count(*) from readings")).scalar() == 3 * 4 * 96


def test_lake_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("IOT_LAKE_ROOT", str(tmp_path / "from-env"))
    result = CliRunner().invoke(
        main, ["simulate", "--devices", "1", "--days", "0.05", "--start", "2026-11-20", "--no-db"]
    )
    assert result.exit_code == 0, result.output
    assert any(Lake(str(tmp_path / "from-env")).list(TELEMETRY_PREFIX))


def test_bad_parameters_get_a_clear_error_and_write_nothing(tmp_path):
    runner = CliRunner()
    for args, message in [
        (["--bad-rate", "1.5"], "bad_rate must be between 0 and 1"),
        (["--buffer", "7"], "buffer_s must be at least 60 and divide an hour"),
        (["--days", "0"], "--days must be positive"),
        (["--to", "sqs", "x"], "'sqs' is not 'kinesis'"),
    ]:
        result = runner.invoke(main, ["simulate", "--lake", str(tmp_path / "lake"), "--no-db", *args])
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    assert not (tmp_path / "lake" / "landing").exists()


def test_prod_without_settings_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("IOT_LAKE_ENV", "prod")
    result = CliRunner().invoke(main, ["simulate", "--no-db", "--lake", str(tmp_path)])
    assert result.exit_code == 1 and "IOT_LAKE_BUCKET" in result.output
