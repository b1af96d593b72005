-- plan_blobs: blobs a hard prune removes: no Image references them (not in keep_set).
-- A blob is young, and kept, when its data or any repository link to it (a fresh push or
-- cross-repository mount of an old layer writes a new link) is younger than the grace
-- period, or when a manifest read for plan_unknown_manifests references it
-- (young_manifest_references: a manifest no Image knows yet, or the manifest of an Image whose
-- metadata does not name its config or children; both are reported as 'young'). The
-- candidates and their links are unreferenced_blobs and unreferenced_links.
-- One row per blob no Image references (digest).
-- Columns: digest VARCHAR, size BIGINT, modified TIMESTAMPTZ, action VARCHAR, kept_because VARCHAR
-- Variables: young_after
WITH newest_link AS (
    SELECT digest, newest(modified) AS modified
    FROM unreferenced_links
    GROUP BY digest
),

referenced_by_young_manifests AS (
    SELECT DISTINCT reference AS digest FROM young_manifest_references
),

aged AS (
    SELECT
        unreferenced_blobs.*,
        young(unreferenced_blobs.modified)
            OR (newest_link.digest IS NOT NULL AND young(newest_link.modified))
            OR pending.digest IS NOT NULL AS is_young
    FROM unreferenced_blobs
    LEFT JOIN newest_link USING (digest)
    LEFT JOIN referenced_by_young_manifests AS pending USING (digest)
)

SELECT digest, size, modified, unnest(decide(is_young))
FROM aged
ORDER BY digest
