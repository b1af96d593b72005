-- blob_namespaces: the namespaces whose repositories link each blob (a layer or manifest
-- link), one row per (digest, namespace); what per-namespace byte counts split a blob by.
-- Columns: digest, namespace
SELECT DISTINCT links.digest, repositories.namespace
FROM (
    SELECT repository, digest FROM layer_links
    UNION ALL
    SELECT repository, digest FROM manifest_links
) AS links
JOIN repositories USING (repository)
