-- The devices of the newest registry snapshot; dim_device's history comes from snapshotting this.
select
    device_id,
    site_id,
    model,
    firmware,
    installed_on,
    updated_at,
    registry_date
from {{ source('lake', 'registry_devices') }}
where registry_date = (select max(registry_date) from {{ source('lake', 'registry_devices') }})
