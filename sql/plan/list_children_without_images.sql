-- list_children_without_images: stored child manifests of manifest-list Images that are no
-- Image of their own (an import, or Images deleted without their list). The list keeps the
-- child manifest (keep_set), but the child's config and layers are named by the child
-- manifest only, so it is read from storage (plan_unknown_manifests) and what it references
-- is kept (unreferenced_blobs). Children not in storage have nothing to keep.
-- One row per child manifest (digest).
-- Columns: digest VARCHAR
-- Variables: none
SELECT DISTINCT child.digest
FROM image_blobs AS child
ANTI JOIN image_blobs AS own ON own.digest = child.digest AND own.kind = 'manifest'
SEMI JOIN blobs ON blobs.digest = child.digest
WHERE child.kind = 'manifest_list_child'
