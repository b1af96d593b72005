-- storage_namespaces: bytes stored per namespace (blobs and unfinished uploads), for the run
-- report. A blob's bytes are split evenly between the namespaces whose repositories link it,
-- as plan_namespaces splits reclaimable bytes, so the column adds up to the bytes stored and
-- a namespace's reclaimable bytes never exceed its stored bytes; a blob no repository links
-- (or only repositories without a namespace) counts under NULL.
-- Built for millions of blobs: one pass groups blobs and links by digest_hash and namespace
-- number (8 bytes each, not strings) and adds up the blobs of one namespace; only the blobs
-- several namespaces share (few: base layers) are looked up again. Two digests with the same
-- hash (odds about 1 in 10^6 at ten million blobs) would count as one blob: their bytes still
-- add up; this report decides nothing.
-- One row per namespace (NULL: blobs no namespace links).
-- Columns: namespace VARCHAR, size BIGINT, blobs BIGINT, uploads BIGINT
-- Variables: none
WITH namespace_ids AS (
    SELECT namespace, row_number() OVER (ORDER BY namespace) AS namespace_id
    FROM (SELECT DISTINCT namespace FROM repositories) AS namespaces
),

links AS NOT MATERIALIZED (
    SELECT digest_hash(links.digest) AS digest_hash, namespace_ids.namespace_id
    FROM (
        SELECT repository, digest FROM layer_links
        UNION ALL
        SELECT repository, digest FROM manifest_links
    ) AS links
    JOIN repositories USING (repository)
    JOIN namespace_ids ON namespace_ids.namespace IS NOT DISTINCT FROM repositories.namespace
),

per_blob AS (
    SELECT
        digest_hash,
        sum(size) AS size,
        min(namespace_id) AS first_id,
        max(namespace_id) AS last_id
    FROM (
        SELECT digest_hash(digest) AS digest_hash, size, NULL::BIGINT AS namespace_id,
            true AS stored
        FROM blobs
        UNION ALL
        SELECT digest_hash, NULL, namespace_id, false FROM links
    ) AS blobs_and_links
    GROUP BY digest_hash
    HAVING bool_or(stored)
),

by_owner AS MATERIALIZED (
    SELECT
        CASE WHEN (first_id IS NOT DISTINCT FROM last_id) THEN first_id END AS namespace_id,
        CASE WHEN (first_id IS DISTINCT FROM last_id) THEN digest_hash END AS shared_hash,
        sum(size) AS size,
        count(*) AS blobs
    FROM per_blob
    GROUP BY ALL
),

shared_owners AS (
    SELECT DISTINCT links.digest_hash, links.namespace_id
    FROM links
    SEMI JOIN by_owner ON by_owner.shared_hash = links.digest_hash
),

blob_shares AS (
    SELECT namespace_id, size, blobs FROM by_owner WHERE shared_hash IS NULL
    UNION ALL
    SELECT
        shared_owners.namespace_id,
        by_owner.size / count(*) OVER (PARTITION BY by_owner.shared_hash),
        1
    FROM by_owner
    JOIN shared_owners ON shared_owners.digest_hash = by_owner.shared_hash
),

per_namespace AS (
    SELECT namespace_ids.namespace, sum(shares.size) AS size, sum(shares.blobs) AS blobs,
        0 AS uploads
    FROM (
        SELECT namespace_id, sum(size) AS size, sum(blobs) AS blobs
        FROM blob_shares GROUP BY namespace_id
    ) AS shares
    LEFT JOIN namespace_ids USING (namespace_id)
    GROUP BY namespace_ids.namespace
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
