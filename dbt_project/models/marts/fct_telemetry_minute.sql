{{ config(
    materialized='incremental',
    incremental_strategy='append',
    on_schema_change='fail',
    tags=['hourly'],
    pre_hook="{{ delete_window('bucket_start', var('late_hours')) }}",
) }}
-- One row per device, metric and minute. A run rebuilds the minutes its landing hours can have
-- changed: the window and the late_hours before it.
select
    device_id,
    metric,
    bucket_start,
    hour_start,
    event_date,
    site_id,
    unit,
    readings,
    mean_value,
    min_value,
    max_value,
    stddev_value,
    last_value,
    last_ts
from {{ ref('stg_telemetry_minute') }}
where {{ in_window('bucket_start', var('late_hours')) }}
