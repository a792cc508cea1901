-- One scored minute of one series.
select
    device_id,
    metric,
    site_id,
    ts,
    event_date,
    actual,
    expected,
    expected_lo,
    expected_hi,
    residual,
    score,
    is_anomalous,
    forecast_origin,
    model_version
from {{ source('lake', 'ops_deviations') }}
