{{ config(
    materialized='incremental',
    incremental_strategy='microbatch',
    event_time='day',
    batch_size='day',
    begin=var('begin'),
    lookback=0,
    on_schema_change='fail',
    tags=['daily'],
) }}
-- One row per device and day, shaped for a QuickSight dataset (flat, no nested types): uptime,
-- data completeness, anomalies and cases, and the forecast error of the day's 5-minute buckets.
with days as (
    select distinct event_date as day
    from {{ ref('fct_telemetry_minute') }}
),
devices as (
    select d.device_id, d.site_id, d.model, d.firmware, d.installed_on, count(m.metric) as metrics_expected
    from {{ ref('dim_device') }} d
    left join {{ ref('stg_device_metrics') }} m on m.device_id = d.device_id
    where d.is_current
    group by d.device_id, d.site_id, d.model, d.firmware, d.installed_on
),
minutes as (
    select device_id, event_date as day, count(*) as metric_minutes, count(distinct bucket_start) as minutes_up,
           cast(sum(readings) as {{ dbt.type_bigint() }}) as readings
    from {{ ref('fct_telemetry_minute') }}
    where event_date in (select day from days)
    group by device_id, event_date
),
deviations as (
    select device_id, event_date as day, count(*) as scored_minutes,
           sum({{ bool_to_int('is_anomalous') }}) as anomalous_minutes, max(score) as max_score
    from {{ ref('fct_deviation') }}
    where event_date in (select day from days)
    group by device_id, event_date
),
cases as (
    select dd.day, c.device_id,
           sum({{ bool_to_int("cast(c.incident_start as date) = dd.day") }}) as cases_opened,
           sum({{ bool_to_int("c.closed_at is null or cast(c.closed_at as date) > dd.day") }}) as cases_open_at_day_end
    from {{ ref('fct_case') }} c
    join days dd on cast(c.incident_start as date) <= dd.day
    group by dd.day, c.device_id
),
latest_forecast as (
    -- Each bucket's most recent forecast, the one an operator looked at.
    select f.device_id, f.metric, f.bucket_start, f.yhat, f.lo_95, f.hi_95,
           row_number() over (partition by f.device_id, f.metric, f.bucket_start order by f.origin desc) as newest
    -- Not the batch's forecasts (dbt would filter on forecast_hour) but every one of its buckets'.
    from {{ ref('fct_forecast').render() }} f
    where cast(f.bucket_start as date) in (select day from days)
),
forecast_error as (
    select a.device_id, a.event_date as day, count(*) as forecast_buckets,
           avg(abs(a.mean_value - f.yhat) / nullif(abs(a.mean_value), 0)) as forecast_mape,
           avg(cast({{ bool_to_int('a.mean_value between f.lo_95 and f.hi_95') }} as {{ type_double() }})) as forecast_coverage_95
    from latest_forecast f
    join {{ ref('stg_telemetry_5min') }} a
      on a.device_id = f.device_id and a.metric = f.metric and a.bucket_start = f.bucket_start
    where f.newest = 1
    group by a.device_id, a.event_date
)
select
    dd.day,
    d.device_id,
    d.site_id,
    d.model,
    d.firmware,
    d.metrics_expected,
    cast(coalesce(m.readings, 0) as {{ dbt.type_bigint() }}) as readings,
    coalesce(m.minutes_up, 0) as minutes_up,
    {{ ratio('coalesce(m.minutes_up, 0)', 1440) }} as uptime,
    {{ ratio('coalesce(m.metric_minutes, 0)', '1440 * d.metrics_expected') }} as data_completeness,
    coalesce(v.scored_minutes, 0) as scored_minutes,
    cast(coalesce(v.anomalous_minutes, 0) as {{ dbt.type_bigint() }}) as anomalous_minutes,
    v.max_score as max_deviation_score,
    cast(coalesce(c.cases_opened, 0) as {{ dbt.type_bigint() }}) as cases_opened,
    cast(coalesce(c.cases_open_at_day_end, 0) as {{ dbt.type_bigint() }}) as cases_open_at_day_end,
    coalesce(e.forecast_buckets, 0) as forecast_buckets,
    e.forecast_mape,
    e.forecast_coverage_95
from days dd
join devices d on d.installed_on <= dd.day
left join minutes m on m.device_id = d.device_id and m.day = dd.day
left join deviations v on v.device_id = d.device_id and v.day = dd.day
left join cases c on c.device_id = d.device_id and c.day = dd.day
left join forecast_error e on e.device_id = d.device_id and e.day = dd.day
