-- One asset check evaluation (landing checks, row accounting, Great Expectations suites, dbt tests),
-- as the ops/check_results asset copied it from Dagster's instance. A dbt test's check is named after
-- the test; its asset is the model it tests (warehouse/<model>).
select
    run_id,
    event_id,
    job,
    asset_key,
    check_name,
    passed,
    severity,
    description,
    partition_key,
    evaluated_at,
    evaluated_date,
    case when asset_key like 'warehouse/%' then 'dbt test' else 'asset check' end as check_kind
from {{ source('lake', 'ops_check_results') }}
