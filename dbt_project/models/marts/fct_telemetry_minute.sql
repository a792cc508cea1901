{#- lookback: a landing hour holds records up to 6 h late (the simulator's and Firehose's bound),
    so its minutes reach that far back. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='microbatch',
    event_time='bucket_start',
    batch_size='hour',
    begin=var('begin'),
    lookback=6,
    on_schema_change='fail',
    tags=['hourly'],
) }}
-- One row per device, metric and minute. A run rebuilds the minutes its landing hours can have
-- changed: its batches, and `lookback` hours before them (a landing hour holds records that late).
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
