-- prune_actions: the plan's deletions as concrete actions, in execution order, minus what an
-- earlier attempt of this run already did (completed_actions, for --resume).
-- phase 1: whole repositories and manifest links; phase 2: blobs; phase 3: dangling layer
-- links and stale uploads. A crash between phases leaves nothing a later run cannot finish:
-- links go before the blobs they point to, and only blob-less links go last.
-- shard: the unit of a parallel batch (the repository, or the blob's two-hex prefix).
-- tags: for a manifest link, the tags whose index lists the digest (their index entries go
-- with it, as distribution's vacuum does).
-- One row per action still to do (action, repository, digest, upload_id).
-- Columns: phase INTEGER, action VARCHAR, repository VARCHAR, digest VARCHAR, upload_id VARCHAR,
--   size BIGINT, shard VARCHAR, tags VARCHAR[]
-- Variables: none
WITH manifest_tags AS (
    SELECT repository, digest, list(DISTINCT tag ORDER BY tag) AS tags
    FROM tag_index
    GROUP BY repository, digest
),

planned AS (
    SELECT 1 AS phase, 'delete_repository' AS action, repository, NULL AS digest,
        NULL AS upload_id, NULL::BIGINT AS size, repository AS shard, NULL AS tags
    FROM plan_repositories WHERE action = 'delete'
    UNION ALL
    SELECT 1, 'delete_manifest_link', links.repository, links.digest, NULL, NULL,
        links.repository, manifest_tags.tags
    FROM plan_manifest_links AS links
    LEFT JOIN manifest_tags USING (repository, digest)
    WHERE links.action = 'delete'
    UNION ALL
    SELECT 2, 'delete_blob', NULL, digest, NULL, size, substr(digest, 8, 2), NULL
    FROM plan_blobs WHERE action = 'delete'
    UNION ALL
    SELECT 3, 'delete_layer_link', repository, digest, NULL, NULL, repository, NULL
    FROM plan_layer_links WHERE action = 'delete'
    UNION ALL
    SELECT 3, 'delete_upload', repository, NULL, upload_id, size, repository, NULL
    FROM plan_uploads WHERE action = 'delete'
)

SELECT planned.*
FROM planned
ANTI JOIN (SELECT * FROM completed_actions WHERE status = 'done') AS done
    ON done.action = planned.action
    AND done.repository IS NOT DISTINCT FROM planned.repository
    AND done.digest IS NOT DISTINCT FROM planned.digest
    AND done.upload_id IS NOT DISTINCT FROM planned.upload_id
ORDER BY phase, shard, action, repository, digest, upload_id
