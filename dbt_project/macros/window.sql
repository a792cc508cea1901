{#- The partition window a run covers: IOT_LAKE_DBT_MIN_TS and IOT_LAKE_DBT_MAX_TS (naive UTC,
    end exclusive), which Dagster sets per run. Without them an incremental model redoes all its
    rows, so `dbt build` by hand is always correct. Environment variables rather than --vars: dbt
    re-parses the whole project when --vars change (every partition), but only the files that
    read an environment variable when it changes, which saves seconds on every partition's run. -#}

{% macro min_ts() -%}{{ return(env_var('IOT_LAKE_DBT_MIN_TS', '')) }}{%- endmacro %}
{% macro max_ts() -%}{{ return(env_var('IOT_LAKE_DBT_MAX_TS', '')) }}{%- endmacro %}

{% macro has_window() -%}
  {{ return(min_ts() != '' and max_ts() != '') }}
{%- endmacro %}

{% macro window_start(lookback_hours=0) -%}
  {%- set start = "cast('" ~ min_ts() ~ "' as " ~ dbt.type_timestamp() ~ ")" -%}
  {%- if lookback_hours -%}{{ dbt.dateadd('hour', -1 * lookback_hours, start) }}{%- else -%}{{ start }}{%- endif -%}
{%- endmacro %}

{% macro window_end() -%}
  cast('{{ max_ts() }}' as {{ dbt.type_timestamp() }})
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
