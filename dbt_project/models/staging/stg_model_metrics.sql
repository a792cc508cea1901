-- Every trained forecast model (one row per version; the registry upserts by version).
select
    version,
    trained_for,
    trained_at,
    method,
    mase,
    coverage_80,
    coverage_95,
    naive_method,
    naive_mase,
    promoted,
    reason
from {{ source('lake', 'models_forecast_metrics') }}
