-- One weather observation of a site, as the curated layer validated it.
select
    site_id,
    observed_at,
    observed_date,
    temperature_c,
    humidity_pct,
    wind_speed_ms,
    precipitation_mm
from {{ source('lake', 'curated_weather') }}
