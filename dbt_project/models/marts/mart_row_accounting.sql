{{ config(tags=['hourly']) }}
-- Per landing hour, what the lake kept of the lines landed that hour: curated rows and quarantined
-- lines. The duplicates the curated layer dropped are in no table (only in the row_accounting check
-- of Dagster's run), so `lines_kept` is lines landed less duplicates, and the rate is of those.
with curated as (
    -- The source object's key, landing/telemetry/YYYY/MM/DD/HH/<file>, names its landing hour;
    -- substrings rather than a regex, so DuckDB and Redshift read it alike.
    select
        cast(
            substring(source_object, 19, 4) || '-' || substring(source_object, 24, 2) || '-'
            || substring(source_object, 27, 2) || ' ' || substring(source_object, 30, 2) || ':00:00'
            as timestamp
        ) as landing_hour,
        count(*) as curated_rows
    from {{ source('lake', 'curated_telemetry') }}
    where source_object like 'landing/telemetry/%'
    group by 1
),

quarantined as (
    select
        landing_hour,
        count(*) as quarantined_lines,
        count(distinct reason) as reasons
    from {{ ref('stg_quarantine_telemetry') }}
    group by 1
),

hours as (
    select landing_hour from curated
    union
    select landing_hour from quarantined
)

select
    h.landing_hour,
    coalesce(c.curated_rows, 0) as curated_rows,
    coalesce(q.quarantined_lines, 0) as quarantined_lines,
    coalesce(c.curated_rows, 0) + coalesce(q.quarantined_lines, 0) as lines_kept,
    coalesce(q.reasons, 0) as reasons,
    cast(coalesce(q.quarantined_lines, 0) as double precision)
    / (coalesce(c.curated_rows, 0) + coalesce(q.quarantined_lines, 0)) as quarantine_rate
from hours as h
left join curated as c on h.landing_hour = c.landing_hour
left join quarantined as q on h.landing_hour = q.landing_hour
