-- recheck_protected: what the metadata and storage, re-read just before deleting, protect
-- beyond the snapshot's plan. The re-read tables are recheck_* (same columns as the
-- snapshot's); the plan's deletions are judged again against them:
--   a blob any Image now references (an Image created since, or one the snapshot missed);
--   a repository whose ImageStream now exists;
--   a manifest link its ImageStream now has, of a digest an Image now has;
--   anything linked since the grace period began (a layer or manifest link): its blob and
--   its repository (and a manifest link itself);
--   every blob a manifest no Image knows yet references (a push in progress,
--   recheck_manifest_references).
-- One row per protection (a protected object may repeat, with different reasons).
-- Columns: kind VARCHAR, repository VARCHAR, digest VARCHAR, reason VARCHAR
-- Variables: young_after
WITH fresh_keep_set AS (
    SELECT DISTINCT digest FROM recheck_image_blobs
),

fresh_history AS (
    SELECT DISTINCT namespace || '/' || name AS repository, image AS digest
    FROM recheck_imagestream_tags
    WHERE image IS NOT NULL
    UNION
    SELECT DISTINCT tags.namespace || '/' || tags.name, child.digest
    FROM recheck_imagestream_tags AS tags
    JOIN recheck_image_blobs AS child
        ON child.image = tags.image AND child.kind = 'manifest_list_child'
),

young_manifest_links AS (
    SELECT repository, digest FROM recheck_manifest_links WHERE young(modified)
),

young_links AS (
    SELECT repository, digest FROM recheck_layer_links WHERE young(modified)
    UNION
    SELECT repository, digest FROM young_manifest_links
)

SELECT 'blob' AS kind, NULL AS repository, digest, 'an Image references it now' AS reason
FROM fresh_keep_set
UNION ALL
SELECT DISTINCT 'blob', NULL, digest, 'linked within the grace period'
FROM young_links
UNION ALL
SELECT DISTINCT 'blob', NULL, reference, 'a manifest pushed since references it'
FROM recheck_manifest_references
UNION ALL
SELECT DISTINCT 'repository', repository, NULL, 'written within the grace period'
FROM young_links
UNION ALL
SELECT 'repository', namespace || '/' || name, NULL, 'its ImageStream exists now'
FROM recheck_imagestreams
UNION ALL
SELECT 'manifest_link', repository, digest, 'its ImageStream and an Image have it now'
FROM fresh_history
SEMI JOIN fresh_keep_set USING (digest)
UNION ALL
SELECT 'manifest_link', repository, digest, 'linked within the grace period'
FROM young_manifest_links
