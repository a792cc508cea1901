-- One forecast step: the champion's band for a 5-minute bucket, made at `origin`.
select
    device_id,
    metric,
    origin,
    bucket_start,
    {{ dbt.dateadd('hour', -1, 'origin') }} as forecast_hour,
    origin_date,
    yhat,
    lo_80,
    hi_80,
    lo_95,
    hi_95,
    model_version,
    method
from {{ source('lake', 'forecasts_telemetry_5min') }}
