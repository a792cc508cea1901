{{ config(
    materialized='incremental',
    incremental_strategy='append',
    on_schema_change='fail',
    tags=['hourly'],
    pre_hook="{{ delete_window(dbt.dateadd('hour', -1, 'origin')) }}",
) }}
-- One forecast step per device, metric, origin and 5-minute bucket. The forecast of hourly
-- partition H is made at the end of H: its origin, less an hour, is in the window.
select
    device_id,
    metric,
    origin,
    bucket_start,
    origin_date,
    {{ minutes_between('origin', 'bucket_start') }} as horizon_minutes,
    yhat,
    lo_80,
    hi_80,
    lo_95,
    hi_95,
    hi_95 - lo_95 as band_width_95,
    model_version,
    method
from {{ ref('stg_forecasts') }}
where {{ in_window(dbt.dateadd('hour', -1, 'origin')) }}
