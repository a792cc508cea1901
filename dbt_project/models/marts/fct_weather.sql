{{ config(tags=['daily']) }}
-- Weather per site and hour: the means of the hour's observations (the provider reports hourly; a
-- provider that reports more often is averaged), precipitation summed over the hour.
select
    site_id,
    {{ dbt.date_trunc('hour', 'observed_at') }} as hour_start,
    count(*) as observations,
    avg(temperature_c) as temperature_c,
    avg(humidity_pct) as humidity_pct,
    avg(wind_speed_ms) as wind_speed_ms,
    sum(precipitation_mm) as precipitation_mm
from {{ ref('stg_weather') }}
group by 1, 2
