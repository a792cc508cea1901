{#- The few generic tests the project needs, written here rather than taken from a package hub
    (nothing may be downloaded at run time). Each returns the offending rows. -#}

{% test accepted_range(model, column_name, min_value=none, max_value=none, inclusive=true) %}
select {{ column_name }} as value
from {{ model }}
where {{ column_name }} is not null and (
  1 = 0
  {%- if min_value is not none %} or {{ column_name }} {{ '<' if inclusive else '<=' }} {{ min_value }}{% endif %}
  {%- if max_value is not none %} or {{ column_name }} {{ '>' if inclusive else '>=' }} {{ max_value }}{% endif %}
)
{% endtest %}

{% test unique_combination(model, combination) %}
select {{ combination | join(', ') }}, count(*) as n
from {{ model }}
group by {{ combination | join(', ') }}
having count(*) > 1
{% endtest %}

{% test expression_is_true(model, expression) %}
select *
from {{ model }}
where not ({{ expression }})
{% endtest %}

{#- The warehouse's hourly counts against the curated layer's readings, hour by hour, over the
    hours the run rebuilt: its --event-time-start/--event-time-end (Dagster's window, lookback
    included), or all hours without them. A missing or doubled minute shows here. -#}
{% test reconciles_with_curated(model, readings_column='readings') %}
{%- set start = invocation_args_dict.get('event_time_start') -%}
{%- set end = invocation_args_dict.get('event_time_end') -%}
{#- dbt's CLI parsed both as datetimes, so only timestamps reach the SQL. -#}
{%- set fmt = '%Y-%m-%d %H:%M:%S' -%}
with curated as (
  {#- The historian's readings (iot_lake/curated/history_job.py) are curated rows too: counted apart,
      so a failing hour says which source the warehouse lost. -#}
  select device_id, metric, {{ dbt.date_trunc('hour', 'event_ts') }} as hour_start, count(*) as readings,
         sum(case when source_object like 'landing/historical/readings/%' then 1 else 0 end) as historian_readings
  from {{ source('lake', 'curated_telemetry') }}
  {% if start and end %}
  {#- The partitions too: the lake view's event_ts (read through timezone()) prunes no file. -#}
  where {{ partitions_between('event_date', start, end) }}
    and event_ts >= cast('{{ start.strftime(fmt) }}' as {{ dbt.type_timestamp() }})
    and event_ts < cast('{{ end.strftime(fmt) }}' as {{ dbt.type_timestamp() }})
  {% endif %}
  group by 1, 2, 3
),
warehouse as (
  select device_id, metric, hour_start, sum({{ readings_column }}) as readings
  from {{ model }}
  {% if start and end %}
  where hour_start >= cast('{{ start.strftime(fmt) }}' as {{ dbt.type_timestamp() }})
    and hour_start < cast('{{ end.strftime(fmt) }}' as {{ dbt.type_timestamp() }})
  {% endif %}
  group by 1, 2, 3
)
select coalesce(c.device_id, w.device_id) as device_id, coalesce(c.metric, w.metric) as metric,
       coalesce(c.hour_start, w.hour_start) as hour_start, c.readings as curated_readings,
       c.historian_readings as curated_historian_readings, w.readings as warehouse_readings
from curated c
full outer join warehouse w
  on c.device_id = w.device_id and c.metric = w.metric and c.hour_start = w.hour_start
where c.readings is null or w.readings is null or c.readings <> w.readings
{% endtest %}
