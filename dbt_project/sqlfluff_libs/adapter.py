"""Stand-in for dbt's ``adapter.dispatch``: the project macros' ``duckdb__`` implementation, else
their ``default__`` one (what dbt-duckdb dispatches to), from the macros sqlfluff loaded."""

from jinja2 import pass_context


@pass_context
def dispatch(context, macro_name, macro_namespace=None):
    return context.get(f"duckdb__{macro_name}") or context[f"default__{macro_name}"]
