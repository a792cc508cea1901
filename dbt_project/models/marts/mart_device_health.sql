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
    select
        d.device_id,
        d.site_id,
        d.model,
        d.firmware,
        d.installed_on,
        count(m.metric) as metrics_expected
    from {{ ref('dim_device') }} as d
    left join {{ ref('stg_device_metrics') }} as m on d.device_id = m.device_id
    where d.is_current
    group by d.device_id, d.site_id, d.model, d.firmware, d.installed_on
),

minutes as (
    select
        device_id,
        event_date as day,
        count(*) as metric_minutes,
        count(distinct bucket_start) as minutes_up,
        cast(sum(readings) as {{ dbt.type_bigint() }}) as readings
    from {{ ref('fct_telemetry_minute') }}
    where event_date in (select day from days)
    group by device_id, event_date
),

deviations as (
    select
        device_id,
        event_date as day,
        count(*) as scored_minutes,
        sum({{ bool_to_int('is_anomalous') }}) as anomalous_minutes,
        max(score) as max_score
    from {{ ref('fct_deviation') }}
    where event_date in (select day from days)
    group by device_id, event_date
),

cases as (
    select
        dd.day,
        c.device_id,
        sum({{ bool_to_int("cast(c.incident_start as date) = dd.day") }}) as cases_opened,
        sum({{ bool_to_int("c.closed_at is null or cast(c.closed_at as date) > dd.day") }}) as cases_open_at_day_end
    from {{ ref('fct_case') }} as c
    inner join days as dd on cast(c.incident_start as date) <= dd.day
    group by dd.day, c.device_id
),

latest_forecast as (
    -- Each bucket's most recent forecast, the one an operator looked at.
    select
        f.device_id,
        f.metric,
        f.bucket_start,
        f.yhat,
        f.lo_95,
        f.hi_95,
        row_number() over (partition by f.device_id, f.metric, f.bucket_start order by f.origin desc) as newest
    -- Not the batch's forecasts (dbt would filter on forecast_hour) but every one of its buckets'.
    from {{ ref('fct_forecast').render() }} as f
    where cast(f.bucket_start as date) in (select day from days)
),

forecast_error as (
    select
        a.device_id,
        a.event_date as day,
        count(*) as forecast_buckets,
        avg(abs(a.mean_value - f.yhat) / nullif(abs(a.mean_value), 0)) as forecast_mape,
        avg(cast({{ bool_to_int('a.mean_value between f.lo_95 and f.hi_95') }} as {{ type_double() }}))
            as forecast_coverage_95
    from latest_forecast as f
    inner join {{ ref('stg_telemetry_5min') }} as a
        on f.device_id = a.device_id and f.metric = a.metric and f.bucket_start = a.bucket_start
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
from days as dd
inner join devices as d on dd.day >= d.installed_on
left join minutes as m on d.device_id = m.device_id and dd.day = m.day
left join deviations as v on d.device_id = v.device_id and dd.day = v.day
left join cases as c on d.device_id = c.device_id and dd.day = c.day
left join forecast_error as e on d.device_id = e.device_id and dd.day = e.day
