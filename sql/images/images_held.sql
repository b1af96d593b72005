-- images_held: Images a remaining tag revision holds, as oc decides before deleting Images
-- (sql/prune-images-rules.md, "Images"): every image of a kept revision of any stream, and
-- the child manifests of a held manifest list (one level, as oc). A stream out of --namespace
-- scope is not in images_tag_revisions, but Images are not deleted then at all.
-- One row per Image a remaining revision holds (image); held_by is one example (ns/name:tag
-- or the list's digest); reason 'held-by-revision' | 'child-of-held-list'.
-- Columns: image VARCHAR, reason VARCHAR, held_by VARCHAR
-- Variables: none
WITH by_revision AS (
    SELECT image, min(namespace || '/' || name || ':' || coalesce(tag, '')) AS held_by
    FROM images_tag_revisions
    WHERE action = 'keep' AND image IS NOT NULL
    GROUP BY image
),

children AS (
    SELECT child.digest AS image, min(child.image) AS held_by
    FROM image_blobs AS child
    SEMI JOIN by_revision ON by_revision.image = child.image
    WHERE child.kind = 'manifest_list_child'
    GROUP BY child.digest
)

SELECT image, 'held-by-revision' AS reason, held_by FROM by_revision
UNION ALL
SELECT image, 'child-of-held-list' AS reason, held_by
FROM children
ANTI JOIN by_revision USING (image)
