{#- The device registry's history: each registry snapshot's devices, a new version whenever a
    device's updated_at moves on (firmware, site, model changes), ended when it leaves the registry. -#}
{% snapshot snap_device %}
{{ config(
    unique_key='device_id',
    strategy='timestamp',
    updated_at='updated_at',
    hard_deletes='invalidate',
) }}
select device_id, site_id, model, firmware, installed_on, updated_at
from {{ ref('stg_devices') }}
{% endsnapshot %}
