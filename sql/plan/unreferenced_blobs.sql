-- unreferenced_blobs: the blobs no Image references, found by digest_hash (exact for absence,
-- see macros.sql): the candidates plan_blobs judges by age. An Image references what keep_set
-- lists, and what the manifests read from storage for it name (young_manifest_references of
-- image_manifests_to_read, an Image whose metadata names no config or children, and of
-- list_children_without_images, the children of an Image's list that are no Image). Written
-- once as a table: plan_blobs and plan_namespaces read them and their links.
-- One row per blob no Image references (digest).
-- Columns: digest VARCHAR, size BIGINT, modified TIMESTAMPTZ
-- Variables: none
WITH read_for_images AS (
    SELECT digest FROM image_manifests_to_read
    UNION
    SELECT digest FROM list_children_without_images
),

read_references AS (
    SELECT DISTINCT refs.reference AS digest
    FROM young_manifest_references AS refs
    SEMI JOIN read_for_images USING (digest)
)

SELECT blobs.*
FROM blobs
ANTI JOIN keep_set ON digest_hash(blobs.digest) = digest_hash(keep_set.digest)
ANTI JOIN read_references USING (digest)
