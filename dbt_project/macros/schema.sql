{#- Schemas are <target schema>_staging, _marts, _snapshots, except in the local DuckDB file, where
    the short names (staging, marts, snapshots) are what an analyst types. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
  {%- if custom_schema_name is none -%}
    {{ target.schema }}
  {%- elif target.type == 'duckdb' -%}
    {{ custom_schema_name | trim }}
  {%- else -%}
    {{ target.schema }}_{{ custom_schema_name | trim }}
  {%- endif -%}
{%- endmacro %}
