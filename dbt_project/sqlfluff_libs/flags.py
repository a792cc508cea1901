"""Stand-in for dbt's ``flags``: sqlfluff renders the models as no dbt command would run them, so
what depends on the command (mart_row_accounting asks the lake only in run and build) renders as
`dbt compile` does."""

WHICH = "compile"
