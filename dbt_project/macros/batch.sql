{#- The lake partitions a microbatch batch's rows lie in, as a filter on the source's partition date
    column: dbt filters a batch's ref on its event_time, but a DuckDB view over the lake's Parquet reads
    that column through timezone('UTC', ...), which no scan can prune on, so without this every batch
    read the whole table (issue 19); a constant date per partition prunes whole partitions, in DuckDB
    as in Redshift Spectrum. ``shift``: the partition's time less the event_time (the forecasts are
    partitioned by origin, an hour after their forecast_hour). Outside a batch (parsing), no filter. -#}
{% macro batch_partitions(date_column, shift_hours=0) -%}
  {%- set batch = model.batch if execute else none -%}
  {%- if not batch -%}
    true
  {%- else -%}
    {{ partitions_between(date_column, batch.event_time_start, batch.event_time_end, shift_hours) }}
  {%- endif -%}
{%- endmacro %}

{#- The partition dates holding the times [start, end) shifted by ``shift_hours``, as a filter on
    ``date_column``: the end is exclusive, so the last row lies a microsecond before it. -#}
{% macro partitions_between(date_column, start, end, shift_hours=0) -%}
  {%- set shift = modules.datetime.timedelta(hours=shift_hours) -%}
  {%- set first = (start + shift).strftime('%Y-%m-%d') -%}
  {%- set last = (end + shift - modules.datetime.timedelta(microseconds=1)).strftime('%Y-%m-%d') -%}
  {{ date_column }} between cast('{{ first }}' as date) and cast('{{ last }}' as date)
{%- endmacro %}
