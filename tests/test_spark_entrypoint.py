"""iot_lake/spark/entrypoint.py: the cluster runs iot_lake's job modules and nothing else."""

import pytest

from iot_lake.spark.entrypoint import ARGS_FLAG, MODULE_FLAG, job_module, main

REFUSED = [
    "os",
    "runpy",
    "iot_lakeX.job",
    "iot_lake",
    "iot_lake.",
    "iot_lake..x",
    "iot_lake.x;rm",
    "../iot_lake.x",
    " iot_lake.x",
]


@pytest.mark.parametrize("module", REFUSED)
def test_other_modules_are_refused_in_either_argument_form(module):
    for argv in ([module, "--lake", "s3://b"], ["--JOB_ID", "j_1", MODULE_FLAG, module, ARGS_FLAG, "[]"]):
        with pytest.raises(SystemExit, match="only iot_lake"):
            main(argv)


@pytest.mark.parametrize("module", ["iot_lake.curated.telemetry_job", "iot_lake.forecast.training_data_job"])
def test_job_modules_pass(module):
    assert job_module(module) == module
