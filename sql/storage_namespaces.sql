-- storage_namespaces: bytes stored per namespace (blobs and unfinished uploads), for the run
-- report. A blob's bytes are split evenly between the namespaces whose repositories link it
-- (blob_namespaces), as plan_namespaces splits reclaimable bytes, so the column adds
-- up to the bytes stored and a namespace's reclaimable bytes never exceed its stored bytes;
-- a blob no repository links (or only repositories without a namespace) counts under NULL.
-- Columns: namespace, size, blobs, uploads
WITH blob_shares AS (
    SELECT
        blob_namespaces.namespace,
        blobs.size / count(*) OVER (PARTITION BY blobs.digest) AS size
    FROM blobs
    LEFT JOIN blob_namespaces USING (digest)
),

per_namespace AS (
    SELECT namespace, sum(size) AS size, count(*) AS blobs, 0 AS uploads
    FROM blob_shares GROUP BY namespace
    UNION ALL
    SELECT repositories.namespace, sum(uploads.size), 0, count(*)
    FROM uploads JOIN repositories USING (repository)
    GROUP BY repositories.namespace
)

SELECT
    namespace,
    round(sum(size))::BIGINT AS size,
    sum(blobs)::BIGINT AS blobs,
    sum(uploads)::BIGINT AS uploads
FROM per_namespace
GROUP BY namespace
ORDER BY size DESC, namespace NULLS LAST
