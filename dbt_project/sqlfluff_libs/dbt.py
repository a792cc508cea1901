"""Stand-ins for the dbt cross-database macros the models call (``dbt.type_bigint()``, ...), so
sqlfluff's jinja templater renders the models offline, without dbt or an adapter. They render
what dbt-duckdb renders; the linted SQL is the model around them, not their output."""


def type_bigint():
    return "bigint"


def type_string():
    return "varchar"


def type_timestamp():
    return "timestamp"


def date_trunc(datepart, date):
    return f"date_trunc('{datepart}', {date})"


def dateadd(datepart, interval, from_date_or_timestamp):
    return f"{from_date_or_timestamp} + ((interval '1 {datepart}') * ({interval}))"


def datediff(first_date, second_date, datepart):
    return f"date_diff('{datepart}', {first_date}, {second_date})"
