-- The sites of the newest registry snapshot.
select
    site_id,
    name as site_name,
    latitude,
    longitude,
    timezone,
    updated_at,
    registry_date
from {{ source('lake', 'registry_sites') }}
where registry_date = (select max(registry_date) from {{ source('lake', 'registry_sites') }})
