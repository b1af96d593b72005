-- plan_namespaces: reclaimable bytes and planned deletions per namespace.
-- A deleted blob's bytes are split evenly between the namespaces whose repositories link it
-- (their links are among unreferenced_links, a fraction of all links), so the column adds
-- up to the plan's total; a blob no repository links is counted under namespace NULL.
-- One row per namespace with planned deletions (NULL: blobs no namespace links).
-- Columns: namespace VARCHAR, size BIGINT, blobs BIGINT, manifest_links BIGINT,
--   repositories BIGINT, layer_links BIGINT, uploads BIGINT
-- Variables: none
WITH deleted_blobs AS (
    SELECT digest, size FROM plan_blobs WHERE action = 'delete'
),

deleted_blob_links AS (
    SELECT repository, digest
    FROM unreferenced_links
    SEMI JOIN deleted_blobs USING (digest)
),

deleted_blob_namespaces AS (
    SELECT DISTINCT deleted_blob_links.digest, repositories.namespace
    FROM deleted_blob_links
    JOIN repositories USING (repository)
),

shares AS (
    SELECT
        deleted_blobs.digest,
        deleted_blob_namespaces.namespace,
        deleted_blobs.size / count(*) OVER (PARTITION BY deleted_blobs.digest) AS size
    FROM deleted_blobs
    LEFT JOIN deleted_blob_namespaces USING (digest)
),

per_namespace AS (
    SELECT namespace, sum(size) AS size, count(*) AS blobs,
        0 AS manifest_links, 0 AS repositories, 0 AS layer_links, 0 AS uploads
    FROM shares GROUP BY namespace
    UNION ALL
    SELECT namespace, 0, 0, count(*), 0, 0, 0
    FROM plan_manifest_links WHERE action = 'delete' GROUP BY namespace
    UNION ALL
    SELECT namespace, 0, 0, 0, count(*), 0, 0
    FROM plan_repositories WHERE action = 'delete' GROUP BY namespace
    UNION ALL
    SELECT repositories.namespace, 0, 0, 0, 0, count(*), 0
    FROM plan_layer_links JOIN repositories USING (repository)
    WHERE action = 'delete' GROUP BY repositories.namespace
    UNION ALL
    SELECT repositories.namespace, sum(plan_uploads.size), 0, 0, 0, 0, count(*)
    FROM plan_uploads JOIN repositories USING (repository)
    WHERE action = 'delete' GROUP BY repositories.namespace
)

SELECT
    namespace,
    round(sum(size))::BIGINT AS size,
    sum(blobs)::BIGINT AS blobs,
    sum(manifest_links)::BIGINT AS manifest_links,
    sum(repositories)::BIGINT AS repositories,
    sum(layer_links)::BIGINT AS layer_links,
    sum(uploads)::BIGINT AS uploads
FROM per_namespace
GROUP BY namespace
ORDER BY size DESC, namespace NULLS LAST
