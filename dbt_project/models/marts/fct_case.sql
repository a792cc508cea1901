-- One row per case with its lifecycle: opened, first acknowledged, closed, by whom and how long
-- each step took. Rebuilt whole each run, as the lake mirror it reads is.
with history as (
    select
        case_key,
        min(case when to_status = 'acknowledged' then changed_at end) as first_acknowledged_at,
        max(case when to_status in ('resolved', 'false_positive') then changed_at end) as closed_at,
        -- a rejected attempt (the loser of two operators acting at once) changed nothing
        count(case when to_status <> 'rejected' then 1 end) as status_changes,
        count(case when to_status = 'rejected' then 1 end) as rejected_attempts
    from {{ ref('stg_case_history') }}
    group by case_key
),

closers as (
    select
        case_key,
        actor as closed_by,
        row_number() over (partition by case_key order by changed_at desc) as newest
    from {{ ref('stg_case_history') }}
    where to_status in ('resolved', 'false_positive')
)

select
    c.case_key,
    c.device_id,
    c.metric,
    c.site_id,
    c.status,
    c.severity,
    c.status in ('open', 'acknowledged') as is_active,
    case
        when c.status = 'false_positive' then 'false_positive'
        when c.status = 'resolved' and c.auto_resolved then 'auto_resolved'
        when c.status = 'resolved' then 'confirmed'
    end as resolution,
    c.incident_start,
    c.last_seen,
    c.back_in_band_since,
    c.opened_at,
    h.first_acknowledged_at,
    case when c.status in ('resolved', 'false_positive') then coalesce(c.resolved_at, h.closed_at) end as closed_at,
    case when c.status in ('resolved', 'false_positive') then k.closed_by end as closed_by,
    c.reopen_count,
    coalesce(h.status_changes, 0) as status_changes,
    coalesce(h.rejected_attempts, 0) as rejected_attempts,
    {{ minutes_between('c.incident_start', 'coalesce(c.back_in_band_since, c.last_seen)') }} as incident_minutes,
    {{ minutes_between('c.opened_at', 'h.first_acknowledged_at') }} as minutes_to_acknowledge,
    case
        when c.status in ('resolved', 'false_positive')
            -- Both on the store's clock: an auto-resolve's resolved_at is the data's time (the point
            -- back in band), which on a replayed window lies before opened_at.
            then {{ minutes_between('c.opened_at', 'coalesce(h.closed_at, c.resolved_at)') }}
    end as minutes_to_close,
    c.updated_at
from {{ ref('stg_cases') }} as c
left join history as h on c.case_key = h.case_key
left join closers as k on c.case_key = k.case_key and k.newest = 1
