{{ config(materialized='table', tags=['daily']) }}
-- One row per current device on the latest day of device health, classed for the dashboards' fleet
-- overview. Rebuilt whole by each daily run, after the mart it reads. A device is down when its uptime
-- is under half the fleet's best of that day, not of 1440 minutes, so a day still in progress (or a
-- lake that began mid-day) does not mark the whole fleet down.
with latest as (
    select max(day) as day
    from {{ ref('mart_device_health') }}
),

day_health as (
    select
        h.device_id,
        h.uptime,
        h.data_completeness,
        h.anomalous_minutes,
        max(h.uptime) over () as fleet_best_uptime
    from {{ ref('mart_device_health') }} as h
    inner join latest as l on h.day = l.day
),

active_cases as (
    select
        device_id,
        count(*) as active_cases
    from {{ ref('fct_case') }}
    where is_active
    group by device_id
)

select
    d.device_id,
    d.site_id,
    d.model,
    l.day,
    coalesce(h.uptime, 0) as uptime,
    coalesce(h.data_completeness, 0) as data_completeness,
    cast(coalesce(h.anomalous_minutes, 0) as {{ dbt.type_bigint() }}) as anomalous_minutes,
    cast(coalesce(c.active_cases, 0) as {{ dbt.type_bigint() }}) as active_cases,
    case
        when h.uptime is null or h.uptime < 0.5 * h.fleet_best_uptime then 'down'
        when coalesce(c.active_cases, 0) > 0 or h.anomalous_minutes > 0 then 'degraded'
        else 'healthy'
    end as health
from {{ ref('dim_device') }} as d
cross join latest as l
left join day_health as h on d.device_id = h.device_id
left join active_cases as c on d.device_id = c.device_id
where d.is_current
