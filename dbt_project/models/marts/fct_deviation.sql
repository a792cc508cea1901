{#- batch_size day: a batch costs about the same fixed time (~0.15 s in DuckDB) whether it holds an
    hour or a day of the fleet, so a Dagster partition is a UTC day (rebuilt each hour as its hours
    arrive), and a range of 5 days is 5 batches per model instead of 120. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='microbatch',
    event_time='ts',
    batch_size='day',
    begin=var('begin'),
    lookback=0,
    on_schema_change='fail',
    tags=['hourly'],
) }}
-- One scored minute per device and metric: the actual against the forecast band.
select
    device_id,
    metric,
    ts,
    event_date,
    site_id,
    actual,
    expected,
    expected_lo,
    expected_hi,
    expected_hi - expected_lo as band_width,
    residual,
    score,
    is_anomalous,
    actual > expected_hi as is_above_band,
    actual < expected_lo as is_below_band,
    forecast_origin,
    model_version
from {{ ref('stg_deviations') }}
where {{ batch_partitions('event_date') }}
