{{ config(materialized='table', tags=['hourly']) }}
-- The newest data of each layer as the warehouse holds it, for the dashboards' freshness table.
-- Rebuilt by each hourly run, after the hourly facts it reads.
select
    'telemetry' as layer,
    max(bucket_start) as latest_at,
    count(*) as row_count
from {{ ref('fct_telemetry_minute') }}
union all
select
    'forecasts' as layer,
    max(origin) as latest_at,
    count(*) as row_count
from {{ ref('fct_forecast') }}
union all
select
    'deviations' as layer,
    max(ts) as latest_at,
    count(*) as row_count
from {{ ref('fct_deviation') }}
union all
select
    'cases' as layer,
    max(updated_at) as latest_at,
    count(*) as row_count
from {{ ref('fct_case') }}
