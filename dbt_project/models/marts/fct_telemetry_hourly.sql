{#- batch_size day: a batch costs about the same fixed time (~0.15 s in DuckDB) whether it holds an
    hour or a day of the fleet, so a Dagster partition is a UTC day (rebuilt each hour as its hours
    arrive), and a range of 5 days is 5 batches per model instead of 120.
    lookback 1 (the day before): a landing hour holds records up to 6 h late (the simulator's and
    Firehose's bound), so its minutes can reach into the previous day. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='microbatch',
    event_time='hour_start',
    batch_size='day',
    begin=var('begin'),
    lookback=1,
    on_schema_change='fail',
    tags=['hourly'],
) }}
-- One row per device, metric and hour, rolled up from the minutes (the mean weighted by readings).
select
    device_id,
    metric,
    hour_start,
    min(event_date) as event_date,
    max(site_id) as site_id,
    max(unit) as unit,
    cast(sum(readings) as {{ dbt.type_bigint() }}) as readings,
    cast(count(*) as {{ dbt.type_bigint() }}) as minutes_reported,
    {{ ratio('count(*)', 60) }} as completeness,
    sum(mean_value * readings) / sum(readings) as mean_value,
    min(min_value) as min_value,
    max(max_value) as max_value
from {{ ref('fct_telemetry_minute') }}
group by device_id, metric, hour_start
