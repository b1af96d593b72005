-- plan_layer_links: dangling _layers links (the reference's TODO), in repositories that are
-- not removed whole: the blob is gone ('blob-missing') or this plan deletes it
-- ('blob-deleted'). A repository serving a link to a missing blob makes pushes skip the
-- upload and pulls fail.
-- Columns: repository, digest, reason, modified, action, kept_because
WITH deleted_blobs AS (
    SELECT digest FROM plan_blobs WHERE action = 'delete'
),

dangling AS (
    SELECT
        layer_links.*,
        CASE
            WHEN blobs.digest IS NULL THEN 'blob-missing'
            WHEN deleted_blobs.digest IS NOT NULL THEN 'blob-deleted'
        END AS reason
    FROM layer_links
    ANTI JOIN plan_repositories USING (repository)
    LEFT JOIN blobs USING (digest)
    LEFT JOIN deleted_blobs USING (digest)
)

SELECT
    repository, digest, reason, modified,
    CASE WHEN young(modified) THEN 'keep' ELSE 'delete' END AS action,
    CASE WHEN young(modified) THEN 'young' END AS kept_because
FROM dangling
WHERE reason IS NOT NULL
ORDER BY repository, digest
