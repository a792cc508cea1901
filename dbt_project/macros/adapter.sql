{#- What DuckDB and Redshift spell differently. dbt's own cross-database macros (dateadd, datediff,
    date_trunc, type_*) cover the rest. -#}

{#- 8-byte floating point: dbt.type_float() is a 4-byte REAL in DuckDB. -#}
{% macro type_double() -%}
  {{ return(adapter.dispatch('type_double', 'iot_lake')()) }}
{%- endmacro %}
{% macro default__type_double() -%}double precision{%- endmacro %}
{% macro duckdb__type_double() -%}double{%- endmacro %}

{#- A share as a double; 0/0 is null. -#}
{% macro ratio(numerator, denominator) -%}
  cast({{ numerator }} as {{ type_double() }}) / nullif(cast({{ denominator }} as {{ type_double() }}), 0)
{%- endmacro %}

{#- A surrogate key: md5 of the parts joined with '|' (both engines have md5 over varchar). -#}
{% macro surrogate_key(parts) -%}
  md5({% for p in parts %}coalesce(cast({{ p }} as {{ dbt.type_string() }}), ''){% if not loop.last %} || '|' || {% endif %}{% endfor %})
{%- endmacro %}

{% macro bool_to_int(expr) -%}
  case when {{ expr }} then 1 else 0 end
{%- endmacro %}

{#- Sample standard deviation: DuckDB and Redshift both have stddev_samp; kept a macro for the
    adapters that do not. -#}
{% macro stddev_samp(expr) -%}
  {{ return(adapter.dispatch('stddev_samp', 'iot_lake')(expr)) }}
{%- endmacro %}
{% macro default__stddev_samp(expr) -%}stddev_samp({{ expr }}){%- endmacro %}

{#- Minutes between two timestamps, as a double (fractions kept). -#}
{% macro minutes_between(start, end) -%}
  {{ return(adapter.dispatch('minutes_between', 'iot_lake')(start, end)) }}
{%- endmacro %}
{% macro default__minutes_between(start, end) -%}
  ({{ dbt.datediff(start, end, 'second') }}) / 60.0
{%- endmacro %}
{% macro duckdb__minutes_between(start, end) -%}
  (epoch({{ end }}) - epoch({{ start }})) / 60.0
{%- endmacro %}
