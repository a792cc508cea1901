{#- batch_size day: a batch costs about the same fixed time (~0.15 s in DuckDB) whether it holds an
    hour or a day of the fleet, so a Dagster partition is a UTC day (rebuilt each hour as its hours
    arrive), and a range of 5 days is 5 batches per model instead of 120.
    lookback 1 (the day before): a landing hour holds records up to 6 h late (the simulator's and
    Firehose's bound), so its minutes can reach into the previous day. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='microbatch',
    event_time='bucket_start',
    batch_size='day',
    begin=var('begin'),
    lookback=1,
    on_schema_change='fail',
    tags=['hourly'],
) }}
-- One row per device, metric and minute. A run rebuilds the minutes its landing hours can have
-- changed: the days of its batches, and the day before them (a landing hour holds records 6 h late).
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
where {{ batch_partitions('event_date') }}
