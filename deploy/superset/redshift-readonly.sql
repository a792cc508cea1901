-- The dashboards' read-only Redshift user (IOT_LAKE_DASHBOARDS_REDSHIFT_USER), run once by an admin.
-- Replace analytics_marts if IOT_LAKE_REDSHIFT_SCHEMA is not analytics, and the password.
CREATE USER iot_lake_dashboards PASSWORD 'Change-me-1' CONNECTION LIMIT 20;
GRANT USAGE ON SCHEMA analytics_marts TO iot_lake_dashboards;
GRANT SELECT ON ALL TABLES IN SCHEMA analytics_marts TO iot_lake_dashboards;
-- dbt recreates the marts on each run: the grant follows the tables its user (here dbt: IOT_LAKE_REDSHIFT_USER) creates.
ALTER DEFAULT PRIVILEGES FOR USER dbt IN SCHEMA analytics_marts GRANT SELECT ON TABLES TO iot_lake_dashboards;
