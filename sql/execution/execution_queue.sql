-- execution_queue: prune_actions, each skipped (skip_reason) unless it is planned now too.
-- recheck_plan_actions is plan_actions of the plan's own models run again over the tables
-- re-read just before deleting (metadata listed again, repositories walked again, manifests
-- pushed since read): one rule set. What was planned before and is not planned now is
-- protected: gone from the plan now (an Image or ImageStream has it now, a push changed it)
-- or kept now (the re-read shows it young). A dry run re-reads too (the same code).
-- blob_repositories: for a blob, the repositories whose layer links point at it.
-- blob_removed: for a layer link, whether this run itself removed its blob (completed_actions:
-- quarantined, or in a dry run would-quarantine): then the blob's presence does not keep the
-- link (a dry run moved nothing; a confirmed run's re-check moves the link back if the blob
-- is in use again).
-- One row per action still to do (as prune_actions).
-- Columns: phase INTEGER, action VARCHAR, repository VARCHAR, digest VARCHAR, upload_id VARCHAR,
--   size BIGINT, shard VARCHAR, tags VARCHAR[], blob_repositories VARCHAR[],
--   blob_removed BOOLEAN, skip_reason VARCHAR
-- Variables: none
WITH removed_blobs AS (
    SELECT digest
    FROM completed_actions
    WHERE action = 'delete_blob'
    QUALIFY row_number() OVER (
        PARTITION BY digest
        ORDER BY time DESC, status IN ('quarantining', 'restoring', 'purging')
    ) = 1 AND status IN ('quarantined', 'would-quarantine')
),

linking_repositories AS (
    SELECT digest, list(DISTINCT repository ORDER BY repository) AS blob_repositories
    FROM layer_links
    SEMI JOIN (SELECT digest FROM prune_actions WHERE action = 'delete_blob') AS blobs
        USING (digest)
    GROUP BY digest
)

SELECT
    actions.*,
    linking.blob_repositories,
    actions.action = 'delete_layer_link' AND removed.digest IS NOT NULL AS blob_removed,
    CASE
        WHEN now.action IS NULL THEN 'not planned when re-read: kept by the metadata or '
            || 'storage as they are now'
        WHEN now.verdict <> 'delete' THEN 'kept when re-read: '
            || coalesce(now.kept_because, now.verdict)
    END AS skip_reason
FROM prune_actions AS actions
LEFT JOIN recheck_plan_actions AS now
    ON now.action = actions.action
    AND now.repository IS NOT DISTINCT FROM actions.repository
    AND now.digest IS NOT DISTINCT FROM actions.digest
    AND now.upload_id IS NOT DISTINCT FROM actions.upload_id
LEFT JOIN linking_repositories AS linking
    ON linking.digest = actions.digest AND actions.action = 'delete_blob'
LEFT JOIN removed_blobs AS removed
    ON removed.digest = actions.digest AND actions.action = 'delete_layer_link'
ORDER BY phase, shard, action, repository, digest, upload_id
