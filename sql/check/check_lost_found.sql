-- check_lost_found: lost manifests that can be restored: read, parsed, every referenced blob
-- present. Each becomes tag lost-found-<hex digest> in ImageStream <namespace>/<name>
-- (created if missing) through an ImageStreamMapping.
-- One row per restorable lost manifest (repository, digest).
-- Columns: namespace VARCHAR, name VARCHAR, repository VARCHAR, digest VARCHAR, tag VARCHAR,
--   media_type VARCHAR
-- Variables: none
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
