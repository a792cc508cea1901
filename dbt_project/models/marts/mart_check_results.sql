-- Per day, asset and check: how often the check was evaluated and how often it failed, the worst
-- severity of its failures and the newest failure's summary. For the data quality dashboard's failed
-- checks; rebuilt by each warehouse_job run, after ops/check_results copied the ended runs' checks.
with evaluations as (

    select
        *,
        -- 1: the newest failure of the day's check (failures sort first), if it failed at all
        row_number() over (
            partition by evaluated_date, asset_key, check_name
            order by passed asc, evaluated_at desc, event_id desc
        ) as failure_rank
    from {{ ref('stg_check_results') }}

)

select
    evaluated_date,
    asset_key,
    check_name,
    max(check_kind) as check_kind,
    count(*) as evaluations,
    sum(case when passed then 0 else 1 end) as failed,
    -- ERROR (fails the run, pages) outranks WARN (shown only)
    case
        when sum(case when not passed and severity = 'ERROR' then 1 else 0 end) > 0 then 'ERROR'
        when sum(case when passed then 0 else 1 end) > 0 then 'WARN'
    end as failed_severity,
    max(case when not passed then evaluated_at end) as last_failed_at,
    max(case when not passed and failure_rank = 1 then description end) as last_failure
from evaluations
group by evaluated_date, asset_key, check_name
