"""The warehouse's view of the lake: which lake tables the dbt project reads, and how an engine
that is not Spark (DuckDB locally, Athena and Redshift Spectrum in prod) finds their files."""
