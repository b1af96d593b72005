-- plan_uploads: unfinished uploads (_uploads/<id>) older than the upload age limit
-- (default 7 days, as the registry's own upload purging), in repositories not removed whole.
-- The start time is startedat, or the newest file of the upload when startedat is missing.
-- One row per stale unfinished upload (repository, upload_id).
-- Columns: repository VARCHAR, upload_id VARCHAR, started_at TIMESTAMPTZ, size BIGINT,
--   modified TIMESTAMPTZ, action VARCHAR, kept_because VARCHAR
-- Variables: young_after, uploads_stale_before
WITH stale AS (
    SELECT uploads.*
    FROM uploads
    ANTI JOIN plan_repositories USING (repository)
    WHERE coalesce(started_at, modified) < getvariable('uploads_stale_before')
)

SELECT repository, upload_id, started_at, size, modified, unnest(decide(young(modified)))
FROM stale
ORDER BY repository, upload_id
