{#- is_incremental() asks the warehouse whether the model's table exists. The offline compile of
    the prod target (tests/test_warehouse_prod.py: no Redshift to ask) sets IOT_LAKE_DBT_OFFLINE
    to `full` or `incremental` to compile either branch; unset, this is dbt's own. -#}
{% macro is_incremental() %}
  {%- set offline = env_var('IOT_LAKE_DBT_OFFLINE', '') -%}
  {%- if offline == 'incremental' -%}
    {{ return(model.config.materialized == 'incremental') }}
  {%- elif offline == 'full' -%}
    {{ return(false) }}
  {%- elif offline -%}
    {{ exceptions.raise_compiler_error("IOT_LAKE_DBT_OFFLINE must be full or incremental, not " ~ offline) }}
  {%- endif -%}
  {{ return(dbt.is_incremental()) }}
{% endmacro %}
