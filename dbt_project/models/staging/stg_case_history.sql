-- Every status change of every case, in order.
select
    case_key,
    "at" as changed_at,  -- quoted: AT is a keyword (AT TIME ZONE)
    from_status,
    to_status,
    actor,
    note
from {{ source('lake', 'cases_history') }}
