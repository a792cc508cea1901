-- The case store's current state of each case (the lake mirror replaces the table whole).
select
    case_key,
    device_id,
    metric,
    site_id,
    incident_start,
    last_seen,
    back_in_band_since,
    severity,
    status,
    auto_resolved,
    opened_at,
    updated_at,
    resolved_at,
    cast(reopen_count as integer) as reopen_count
from {{ source('lake', 'cases_cases') }}
