-- plan_unknown_manifests: the manifests a plan reads from storage before deciding anything:
-- those linked within the grace period that no Image knows (a push whose Image is not created
-- or listed yet), and those of Images whose metadata does not say what they reference
-- (image_manifests_to_read). Every blob they reference is kept (plan_blobs): a fresh push may
-- reuse an old, otherwise unreferenced layer without writing anything new for it.
-- One row per manifest digest (digest).
-- Columns: digest VARCHAR
-- Variables: young_after
SELECT DISTINCT manifest_links.digest
FROM manifest_links
ANTI JOIN keep_set USING (digest)
WHERE young(manifest_links.modified)
UNION
SELECT digest FROM image_manifests_to_read
ORDER BY digest
