-- 1-minute buckets per device and metric, as curated; only renamed and typed.
select
    device_id,
    site_id,
    metric,
    unit,
    bucket_start,
    {{ dbt.date_trunc('hour', 'bucket_start') }} as hour_start,
    event_date,
    cast(readings as {{ dbt.type_bigint() }}) as readings,
    mean as mean_value,
    min as min_value,
    max as max_value,
    stddev as stddev_value,
    last as last_value,
    last_ts
from {{ source('lake', 'curated_telemetry_1min') }}
