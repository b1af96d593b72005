-- execution_summary: the outcome of an executed plan (the audit trail, latest outcome per
-- action): per action and status, how many and how many bytes (blobs and uploads free
-- bytes; links and repositories are counted only). skip/failure reasons are listed too.
-- One row per (action, status) of the audit trail.
-- Columns: action VARCHAR, status VARCHAR, count BIGINT, size BIGINT, reasons VARCHAR[]
-- Variables: none
WITH latest AS (
    SELECT * FROM actions
    QUALIFY row_number() OVER (
        PARTITION BY action, repository, digest, upload_id ORDER BY time DESC
    ) = 1
)

SELECT
    action,
    status,
    count(*) AS count,
    coalesce(sum(size), 0)::BIGINT AS size,
    list(DISTINCT reason ORDER BY reason) FILTER (WHERE reason IS NOT NULL) AS reasons
FROM latest
GROUP BY action, status
ORDER BY action, status
