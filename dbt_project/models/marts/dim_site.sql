-- Sites of the newest registry snapshot, with how many devices they have now.
with devices as (
    select
        site_id,
        count(*) as devices
    from {{ ref('stg_devices') }}
    group by site_id
)

select
    s.site_id,
    s.site_name,
    s.latitude,
    s.longitude,
    s.timezone,
    coalesce(d.devices, 0) as devices,
    s.updated_at,
    s.registry_date
from {{ ref('stg_sites') }} as s
left join devices as d on s.site_id = d.site_id
