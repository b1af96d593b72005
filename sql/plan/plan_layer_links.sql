-- plan_layer_links: dangling _layers links (the reference's TODO), in repositories that are
-- not removed whole: the blob is gone ('blob-missing') or this plan deletes it
-- ('blob-deleted'). A repository serving a link to a missing blob makes pushes skip the
-- upload and pulls fail. Missing blobs are found by digest_hash alone (the set difference of
-- two hash lists, not of millions of links with their columns).
-- One row per dangling layer link (repository, digest).
-- Columns: repository VARCHAR, digest VARCHAR, reason VARCHAR, modified TIMESTAMPTZ,
--   action VARCHAR, kept_because VARCHAR
-- Variables: young_after
WITH deleted_blobs AS (
    SELECT digest FROM plan_blobs WHERE action = 'delete'
),

surviving_links AS NOT MATERIALIZED (
    SELECT layer_links.*
    FROM layer_links
    ANTI JOIN plan_repositories USING (repository)
),

missing_blob_hashes AS (
    SELECT digest_hash(digest) AS digest_hash FROM surviving_links
    EXCEPT
    SELECT digest_hash(digest) FROM blobs
),

dangling AS (
    SELECT surviving_links.*, 'blob-missing' AS reason
    FROM surviving_links
    SEMI JOIN missing_blob_hashes AS missing
        ON missing.digest_hash = digest_hash(surviving_links.digest)
    UNION ALL
    SELECT surviving_links.*, 'blob-deleted'
    FROM surviving_links
    SEMI JOIN deleted_blobs USING (digest)
)

SELECT repository, digest, reason, modified, unnest(decide(young(modified)))
FROM dangling
ORDER BY repository, digest
