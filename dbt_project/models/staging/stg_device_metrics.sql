-- The metrics each device of the newest registry snapshot reports, with their physical range.
select
    device_id,
    metric,
    unit as reported_unit,
    canonical_unit,
    min_value,
    max_value,
    updated_at,
    registry_date
from {{ source('lake', 'registry_device_metrics') }}
where registry_date = (select max(registry_date) from {{ source('lake', 'registry_device_metrics') }})
