"""Dagster resources, one module per resource; ``resources.environment`` chooses them per environment."""
