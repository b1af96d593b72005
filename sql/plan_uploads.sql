-- plan_uploads: unfinished uploads (_uploads/<id>) older than the upload age limit
-- (default 7 days, as the registry's own upload purging), in repositories not removed whole.
-- The start time is startedat, or the newest file of the upload when startedat is missing.
-- Columns: repository, upload_id, started_at, size, modified, action, kept_because
WITH stale AS (
    SELECT uploads.*
    FROM uploads
    ANTI JOIN plan_repositories USING (repository)
    WHERE coalesce(started_at, modified) < getvariable('uploads_stale_before')
)

SELECT
    repository, upload_id, started_at, size, modified,
    CASE WHEN young(modified) THEN 'keep' ELSE 'delete' END AS action,
    CASE WHEN young(modified) THEN 'young' END AS kept_because
FROM stale
ORDER BY repository, upload_id
