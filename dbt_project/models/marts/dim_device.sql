-- Devices with history (SCD type 2 from the snap_device snapshot): one row per version.
select
    {{ surrogate_key(['device_id', 'dbt_valid_from']) }} as device_key,
    device_id,
    site_id,
    model,
    firmware,
    installed_on,
    dbt_valid_from as valid_from,
    dbt_valid_to as valid_to,
    dbt_valid_to is null as is_current
from {{ ref('snap_device') }}
