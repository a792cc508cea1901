-- One landed line the curated layer rejected: its landing hour, source object, line and reason.
select
    landing_hour,
    landing_date,
    source_object,
    line_number,
    reason,
    detail,
    device_id,
    metric
from {{ source('lake', 'quarantine_telemetry') }}
