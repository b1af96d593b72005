-- execution_summary: the outcome of an executed plan or a dry run (latest_actions): per
-- action and status (quarantined, purged, restored, gone, skipped, failed; would-quarantine
-- and would-purge in a dry run), how many and how many bytes (blobs and uploads free bytes;
-- links and repositories are counted only) and files. Reasons are listed too.
-- One row per (action, status) of the audit trail.
-- Columns: action VARCHAR, status VARCHAR, count BIGINT, size BIGINT, files BIGINT,
--   reasons VARCHAR[]
-- Variables: none
SELECT
    action,
    status,
    count(*) AS count,
    coalesce(sum(size), 0)::BIGINT AS size,
    coalesce(sum(len(files)), 0)::BIGINT AS files,
    list(DISTINCT reason ORDER BY reason) FILTER (WHERE reason IS NOT NULL) AS reasons
FROM latest_actions
GROUP BY action, status
ORDER BY action, status
