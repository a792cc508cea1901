{{ config(tags=['hourly']) }}
-- Per landing hour, what the lake kept of the lines landed that hour: curated rows and quarantined
-- lines. The duplicates the curated layer dropped are in no table (only in the row_accounting check
-- of Dagster's run), so `lines_kept` is lines landed less duplicates, and the rate is of those.
{#- Whether the curated telemetry job has counted the lake's objects yet, asked of the lake view
    (re-made before every run, so even the first hourly run after a deploy can ask): its rows, none
    being false. Only the CTE it names is read: an unused one is never run (hence the noqa). Asked
    when the model is built only: `dbt compile` (offline, for Redshift in tests) shows the counted SQL. -#}
{%- set counted = true -%}
{%- if execute and flags.WHICH in ('run', 'build') -%}
    {%- set counted = run_query(
        "select 1 from " ~ source('lake', 'curated_telemetry_object_counts') ~ " limit 1"
    ).rows -%}
{%- endif %}
with counted as (  -- noqa: ST03
    -- The curated rows of each landing object, counted by the curated telemetry job after its
    -- MERGE (iot_lake/curated/object_counts.py): a small table, so the hour's run does not grow with
    -- curated telemetry, as counting it whole every hour did (recounted, below). Objects that left no
    -- curated row are counted as 0: skipped, as an hour of none was before.
    select
        landing_hour,
        cast(sum(curated_rows) as bigint) as curated_rows
    from {{ ref('stg_telemetry_object_counts') }}
    where curated_rows > 0
    group by 1
),

recounted as (  -- noqa: ST03
    -- No counts yet: a lake curated before the job kept them, until its first curated run since
    -- (which counts every object of curated telemetry, once). Counted as they always were meanwhile,
    -- so no hour of that history goes missing. The source object's key,
    -- landing/telemetry/YYYY/MM/DD/HH/<file>, names its landing hour; substrings rather than a
    -- regex, so DuckDB and Redshift read it alike.
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

curated as (
    select * from {{ 'counted' if counted else 'recounted' }}
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
