-- check_lost_found: lost manifests that can be restored: read, parsed, every referenced blob
-- present. Each becomes tag lost-found-<hex digest> in ImageStream <namespace>/<name>
-- (created if missing) through an ImageStreamMapping.
-- Columns: namespace, name, repository, digest, tag, media_type
SELECT
    candidates.namespace,
    candidates.name,
    candidates.repository,
    candidates.digest,
    'lost-found-' || substr(candidates.digest, length('sha256:') + 1) AS tag,
    manifests.media_type
FROM check_lost_candidates AS candidates
JOIN lost_manifests AS manifests USING (digest)
ANTI JOIN check_invalid_manifests USING (repository, digest)
ORDER BY candidates.namespace, candidates.name, candidates.digest
