-- plan_unknown_manifests: manifests linked within the grace period that no Image knows (a
-- push whose Image is not created or listed yet). They are read from storage, and every
-- blob they reference is kept as young: a fresh push may reuse an old, otherwise
-- unreferenced layer without writing anything new for it.
-- One row per manifest digest (digest).
-- Columns: digest VARCHAR
-- Variables: young_after
SELECT DISTINCT manifest_links.digest
FROM manifest_links
ANTI JOIN keep_set USING (digest)
WHERE young(manifest_links.modified)
ORDER BY manifest_links.digest
