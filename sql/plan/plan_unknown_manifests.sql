-- plan_unknown_manifests: the manifests a plan reads from storage before deciding anything,
-- because the metadata does not say in full what they reference:
--   manifests linked within the grace period that no Image knows (a push whose Image is not
--   created or listed yet: a fresh push may reuse an old, otherwise unreferenced layer without
--   writing anything new for it; plan_blobs keeps what they reference as young);
--   image_manifests_to_read, Images whose metadata names neither config nor children;
--   list_children_without_images, whatever their age: an Image's manifest list keeps them,
--   and only the child manifest names its config and layers (unreferenced_blobs leaves what
--   these two reference out of the candidates).
-- One row per manifest digest (digest).
-- Columns: digest VARCHAR
-- Variables: young_after
SELECT manifest_links.digest
FROM manifest_links
ANTI JOIN keep_set USING (digest)
WHERE young(manifest_links.modified)
UNION
SELECT digest FROM image_manifests_to_read
UNION
SELECT digest FROM list_children_without_images
ORDER BY digest
