-- check_invalid_manifests: lost manifests that cannot be restored, with the reason: the
-- manifest could not be read or parsed, or a blob it references (config, layer, child
-- manifest) is not in storage.
-- One row per lost manifest and a reason it cannot be restored (repository, digest, reason).
-- Columns: repository VARCHAR, digest VARCHAR, reason VARCHAR
-- Variables: none
WITH unreadable AS (
    SELECT candidates.repository, candidates.digest, manifests.problem AS reason
    FROM check_lost_candidates AS candidates
    JOIN lost_manifests AS manifests USING (digest)
    WHERE manifests.problem IS NOT NULL
),

missing_references AS (
    SELECT
        candidates.repository,
        candidates.digest,
        'missing ' || refs.kind || ' ' || refs.reference AS reason
    FROM check_lost_candidates AS candidates
    JOIN lost_manifest_references AS refs USING (digest)
    ANTI JOIN blobs ON blobs.digest = refs.reference
)

SELECT repository, digest, reason FROM unreadable
UNION ALL
SELECT repository, digest, reason FROM missing_references
ORDER BY repository, digest, reason
