-- One landing object's curated rows, as the curated telemetry job counted them.
select
    source_object,
    landing_hour,
    landing_date,
    curated_rows,
    counted_at
from {{ source('lake', 'curated_telemetry_object_counts') }}
