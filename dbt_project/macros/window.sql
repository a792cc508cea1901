{#- The partition window a run covers. Dagster passes min_ts/max_ts (naive UTC, end exclusive);
    without them an incremental model redoes all its rows, so `dbt build` by hand is always correct. -#}

{% macro has_window() -%}
  {{ return(var('min_ts', none) is not none and var('max_ts', none) is not none) }}
{%- endmacro %}

{% macro window_start(lookback_hours=0) -%}
  {%- set start = "cast('" ~ var('min_ts') ~ "' as " ~ dbt.type_timestamp() ~ ")" -%}
  {%- if lookback_hours -%}{{ dbt.dateadd('hour', -1 * lookback_hours, start) }}{%- else -%}{{ start }}{%- endif -%}
{%- endmacro %}

{% macro window_end() -%}
  cast('{{ var("max_ts") }}' as {{ dbt.type_timestamp() }})
{%- endmacro %}

{#- `where` clause of an incremental model's new rows: its window on `column`, or everything. -#}
{% macro in_window(column, lookback_hours=0) -%}
  {%- if is_incremental() and has_window() -%}
    {{ column }} >= {{ window_start(lookback_hours) }} and {{ column }} < {{ window_end() }}
  {%- else -%}
    1 = 1
  {%- endif -%}
{%- endmacro %}

{#- pre_hook of the incremental models: delete the rows the run rebuilds, so re-running a partition
    gives the same table (append then adds them back). No window: every row is rebuilt. -#}
{% macro delete_window(column, lookback_hours=0) -%}
  {%- set existing = adapter.get_relation(database=this.database, schema=this.schema, identifier=this.identifier) -%}
  {%- if existing is none or flags.FULL_REFRESH -%}
    select 1
  {%- elif has_window() -%}
    delete from {{ this }} where {{ column }} >= {{ window_start(lookback_hours) }} and {{ column }} < {{ window_end() }}
  {%- else -%}
    delete from {{ this }}
  {%- endif -%}
{%- endmacro %}
