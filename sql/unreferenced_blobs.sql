-- unreferenced_blobs: the blobs no Image references (not in keep_set, nor referenced by a
-- child manifest of an Image's list that is no Image itself: list_children_without_images,
-- read from storage into young_manifest_references), found by digest_hash (exact for
-- absence, see macros.sql): the candidates plan_blobs judges by age. Written once as a
-- table: plan_blobs and plan_namespaces read them and their links.
-- Columns: digest, size, modified
WITH child_references AS (
    SELECT DISTINCT refs.reference AS digest
    FROM young_manifest_references AS refs
    SEMI JOIN list_children_without_images USING (digest)
)

SELECT blobs.*
FROM blobs
ANTI JOIN keep_set ON digest_hash(blobs.digest) = digest_hash(keep_set.digest)
ANTI JOIN child_references USING (digest)
