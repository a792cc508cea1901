"""Cases: anomaly incidents per series, kept in a transactional store (SQLite locally, PostgreSQL
in prod), sent to sinks through an outbox and mirrored into the lake. See ``store`` for the lifecycle."""
