-- plan_unknown_manifests: manifests no Image knows whose references must be read from
-- storage before any blob is planned, and every blob they reference is kept:
--   manifests linked within the grace period (a push whose Image is not created or listed
--   yet: a fresh push may reuse an old, otherwise unreferenced layer without writing
--   anything new for it);
--   list_children_without_images, whatever their age: an Image's manifest list keeps them,
--   and only the child manifest names its config and layers.
-- Columns: digest
SELECT manifest_links.digest
FROM manifest_links
ANTI JOIN keep_set USING (digest)
WHERE young(manifest_links.modified)
UNION
SELECT digest FROM list_children_without_images
ORDER BY digest
