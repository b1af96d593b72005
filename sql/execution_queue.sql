-- execution_queue: prune_actions with what the re-read of metadata and storage protects
-- marked as skipped (skip_reason), in execution order.
-- blob_repositories: for a blob, the repositories whose layer links point at it (the
-- registry's cache of each must be cleared when --registry-url is given).
-- One row per action still to do (as prune_actions).
-- Columns: phase INTEGER, action VARCHAR, repository VARCHAR, digest VARCHAR, upload_id VARCHAR,
--   size BIGINT, shard VARCHAR, tags VARCHAR[], blob_repositories VARCHAR[], skip_reason VARCHAR
-- Variables: none
WITH protected_blobs AS (
    SELECT digest, min(reason) AS reason FROM recheck_protected
    WHERE kind = 'blob' GROUP BY digest
),

protected_repositories AS (
    SELECT repository, min(reason) AS reason FROM recheck_protected
    WHERE kind = 'repository' GROUP BY repository
),

protected_links AS (
    SELECT repository, digest, min(reason) AS reason FROM recheck_protected
    WHERE kind = 'manifest_link' GROUP BY repository, digest
),

linking_repositories AS (
    SELECT digest, list(DISTINCT repository ORDER BY repository) AS blob_repositories
    FROM layer_links GROUP BY digest
)

SELECT
    actions.*,
    linking.blob_repositories,
    CASE actions.action
        WHEN 'delete_blob' THEN blobs.reason
        WHEN 'delete_repository' THEN repositories.reason
        WHEN 'delete_manifest_link' THEN links.reason
    END AS skip_reason
FROM prune_actions AS actions
LEFT JOIN protected_blobs AS blobs USING (digest)
LEFT JOIN protected_repositories AS repositories USING (repository)
LEFT JOIN protected_links AS links USING (repository, digest)
LEFT JOIN linking_repositories AS linking
    ON linking.digest = actions.digest AND actions.action = 'delete_blob'
ORDER BY phase, shard, action, repository, digest, upload_id
