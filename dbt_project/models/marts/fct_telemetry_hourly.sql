{{ config(
    materialized='incremental',
    incremental_strategy='append',
    on_schema_change='fail',
    tags=['hourly'],
    pre_hook="{{ delete_window('hour_start', var('late_hours')) }}",
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
where {{ in_window('hour_start', var('late_hours')) }}
group by device_id, metric, hour_start
