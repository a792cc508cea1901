{{ config(tags=['daily']) }}
-- Each current device with its site's hourly weather, so the device drill-down's device filter
-- picks the weather of the device's site.
select
    d.device_id,
    w.site_id,
    w.hour_start,
    w.temperature_c,
    w.humidity_pct,
    w.wind_speed_ms,
    w.precipitation_mm
from {{ ref('dim_device') }} as d
inner join {{ ref('fct_weather') }} as w on d.site_id = w.site_id
where d.is_current
