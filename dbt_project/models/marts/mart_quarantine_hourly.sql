{{ config(tags=['hourly']) }}
-- Quarantined lines per landing hour and reason, and their share of the lines the lake kept that
-- hour (mart_row_accounting's lines_kept: curated rows plus quarantined lines).
select
    q.landing_hour,
    q.reason,
    count(*) as quarantined_lines,
    count(distinct q.source_object) as source_objects,
    max(a.lines_kept) as lines_kept,
    cast(count(*) as double precision) / max(a.lines_kept) as quarantine_rate
from {{ ref('stg_quarantine_telemetry') }} as q
inner join {{ ref('mart_row_accounting') }} as a on q.landing_hour = a.landing_hour
group by q.landing_hour, q.reason
