{#- batch_size day: a batch costs about the same fixed time (~0.15 s in DuckDB) whether it holds an
    hour or a day of the fleet, so a Dagster partition is a UTC day (rebuilt each hour as its hours
    arrive), and a range of 5 days is 5 batches per model instead of 120. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='microbatch',
    event_time='forecast_hour',
    batch_size='day',
    begin=var('begin'),
    lookback=0,
    on_schema_change='fail',
    tags=['hourly'],
) }}
-- One forecast step per device, metric, origin and 5-minute bucket. The forecast of hourly
-- partition H is made at the end of H: its batch is its forecast_hour, the origin less an hour.
select
    device_id,
    metric,
    origin,
    bucket_start,
    forecast_hour,
    origin_date,
    {{ minutes_between('origin', 'bucket_start') }} as horizon_minutes,
    yhat,
    lo_80,
    hi_80,
    lo_95,
    hi_95,
    hi_95 - lo_95 as band_width_95,
    model_version,
    method
from {{ ref('stg_forecasts') }}
where {{ batch_partitions('origin_date', shift_hours=1) }}
