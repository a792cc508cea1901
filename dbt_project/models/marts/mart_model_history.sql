-- Per training day, the model that day's training chose, against the better seasonal naive, with
-- its interval coverage and whether it became champion. Job names are unique per run, so a re-run
-- of a day's training is a second version of that day: the day shows its promoted version if one
-- was promoted (that is the one batch forecasts used), else its latest.
with ranked as (
    select
        *,
        row_number() over (
            partition by trained_for order by promoted desc, trained_at desc, version desc
        ) as rank_in_day,
        count(*) over (partition by trained_for) as versions_trained
    from {{ ref('stg_model_metrics') }}
),

champion as (
    -- record() makes each promoted version the champion: the newest promoted one is it now
    select version
    from {{ ref('stg_model_metrics') }}
    where promoted
    order by trained_at desc, version desc
    limit 1
)

select
    ranked.trained_for,
    ranked.version,
    ranked.trained_at,
    ranked.method,
    ranked.mase,
    ranked.naive_method,
    ranked.naive_mase,
    ranked.mase / nullif(ranked.naive_mase, 0) as mase_vs_naive,
    ranked.coverage_80,
    ranked.coverage_95,
    ranked.promoted as became_champion,
    coalesce(ranked.version = champion.version, false) as is_champion,
    ranked.reason,
    ranked.versions_trained
from ranked
left join champion on true
where ranked.rank_in_day = 1
