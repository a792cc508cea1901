{#- A data test of a microbatch fact checks what its run rebuilt, not the whole table: with
    --event-time-start/--event-time-end (Dagster's window, lookback included) the tested model is
    read through its event_time within that window, so an hour's tests cost an hour's rows however
    much history the table holds (issue 19). reconciles_with_curated bounds the curated side alike.
    Without the window (a full build), and for the other models, a test reads the whole model.
    dbt calls this macro on every generic test's model; a test's own `where` config still applies. -#}
{% macro get_where_subquery(relation) -%}
  {%- set clauses = [] -%}
  {%- if config.get('where', '') -%}
    {%- do clauses.append('(' ~ config.get('where') ~ ')') -%}
  {%- endif -%}
  {%- set event_time = microbatch_event_time(model) -%}
  {%- set start = invocation_args_dict.get('event_time_start') -%}
  {%- set end = invocation_args_dict.get('event_time_end') -%}
  {%- if event_time and start and end -%}
    {#- dbt's CLI parsed both as datetimes, so only timestamps reach the SQL. -#}
    {%- set fmt = '%Y-%m-%d %H:%M:%S' -%}
    {%- do clauses.append(event_time ~ " >= cast('" ~ start.strftime(fmt) ~ "' as " ~ dbt.type_timestamp() ~ ")") -%}
    {%- do clauses.append(event_time ~ " < cast('" ~ end.strftime(fmt) ~ "' as " ~ dbt.type_timestamp() ~ ")") -%}
  {%- endif -%}
  {%- if clauses -%}
    {%- do return('(select * from ' ~ relation ~ ' where ' ~ (clauses | join(' and ')) ~ ') dbt_subquery') -%}
  {%- endif -%}
  {%- do return(relation) -%}
{%- endmacro %}

{#- The event_time of the microbatch model a test is attached to, or none (any other model, or parsing). -#}
{% macro microbatch_event_time(test_node) -%}
  {%- if not execute or not test_node.attached_node -%}
    {%- do return(none) -%}
  {%- endif -%}
  {%- set tested = graph.nodes.get(test_node.attached_node) -%}
  {%- if tested and tested.config.incremental_strategy == 'microbatch' -%}
    {%- do return(tested.config.event_time) -%}
  {%- endif -%}
  {%- do return(none) -%}
{%- endmacro %}
