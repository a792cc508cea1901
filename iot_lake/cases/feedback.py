"""The contract of cases/feedback: how resolved anomaly cases flow back into forecasting.

A Delta table at ``cases/feedback`` (written by iot_lake.cases.mirror; absent until it runs), one row
per resolved case:

    case_id     string     the case's id
    device_id   string     the device whose series the case is about
    metric      string     the metric of that series
    start_ts    timestamp  first instant of the case (UTC, inclusive)
    end_ts      timestamp  end of the case (UTC, exclusive); start_ts < end_ts, both set
    resolution  string     "confirmed" (CONFIRMED) or "false_positive" (FALSE_POSITIVE)

Training data drops the rows of a CONFIRMED case's series whose bucket overlaps
[start_ts, end_ts): a confirmed anomaly must not be learnt as normal behaviour. A FALSE_POSITIVE
case was normal after all, so its rows stay in.
"""

CASES_FEEDBACK = "cases/feedback"
CONFIRMED = "confirmed"
FALSE_POSITIVE = "false_positive"
FEEDBACK_SCHEMA = (
    "case_id string, device_id string, metric string, start_ts timestamp, end_ts timestamp, resolution string"
)
