"""Jobs and schedules over the assets, one module per domain: ingest, curated, ml, warehouse, maintenance.

``python -m jobs.main`` is the main command: it simulates the sources and runs these jobs end to end.
"""
