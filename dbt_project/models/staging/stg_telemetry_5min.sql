-- 5-minute buckets per device and metric: the grain the forecasts are made at.
select
    device_id,
    site_id,
    metric,
    unit,
    bucket_start,
    event_date,
    cast(readings as {{ dbt.type_bigint() }}) as readings,
    mean as mean_value
from {{ source('lake', 'curated_telemetry_5min') }}
