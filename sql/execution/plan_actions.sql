-- plan_actions: every row of a plan (plan_repositories, plan_manifest_links, plan_blobs,
-- plan_layer_links, plan_uploads) as the action that executes it, deleted or kept: the one
-- mapping from the plan to actions. prune_actions executes its deletions; before deleting,
-- the plan's models run again over the re-read tables and this model over that plan is what
-- is planned now (execution_queue compares the two).
-- phase 1: whole repositories and manifest links; phase 2: blobs; phase 3: dangling layer
-- links and stale uploads (links go before the blobs they point to, blob-less links last).
-- shard: the unit of a parallel batch (the repository, or the blob's two-hex prefix).
-- verdict: the plan's action ('delete' | 'keep'); kept_because: why kept ('young').
-- One row per plan row (one action each).
-- Columns: phase INTEGER, action VARCHAR, repository VARCHAR, digest VARCHAR, upload_id VARCHAR,
--   size BIGINT, shard VARCHAR, verdict VARCHAR, kept_because VARCHAR
-- Variables: none
SELECT
    1 AS phase, 'delete_repository' AS action, repository, NULL::VARCHAR AS digest,
    NULL::VARCHAR AS upload_id, NULL::BIGINT AS size, repository AS shard,
    action AS verdict, kept_because
FROM plan_repositories
UNION ALL
SELECT 1, 'delete_manifest_link', repository, digest, NULL, NULL, repository, action,
    kept_because
FROM plan_manifest_links
UNION ALL
SELECT 2, 'delete_blob', NULL, digest, NULL, size, substr(digest, 8, 2), action, kept_because
FROM plan_blobs
UNION ALL
SELECT 3, 'delete_layer_link', repository, digest, NULL, NULL, repository, action,
    kept_because
FROM plan_layer_links
UNION ALL
SELECT 3, 'delete_upload', repository, NULL, upload_id, size, repository, action, kept_because
FROM plan_uploads
