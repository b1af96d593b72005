-- images_workload_uses: the image references that protect something in prune-images, as oc
-- counts them (sql/prune-images-rules.md, "Which references count"): parsed references that
-- name host/ns/name (any host), of every workload kind; a Pod only while Running or Pending,
-- or when it was created at or after the cutoff (with --prune-over-size-limit every Pod, as oc
-- has no cutoff then; a Pod of unknown age counts). Builds' ImageStreamTag/ImageStreamImage
-- inputs are counted too (their namespace defaults to the build's).
-- A reference with a tag protects (ref_namespace, ref_name, tag), one with a digest
-- (ref_namespace, ref_name, digest) and, beyond oc, the Image of that digest.
-- One row per counted reference of a workload.
-- Columns: ref_namespace VARCHAR, ref_name VARCHAR, tag VARCHAR, digest VARCHAR, kind VARCHAR,
--   namespace VARCHAR, name VARCHAR, reference VARCHAR
-- Variables: prune_over_size_limit, young_after
WITH counted AS (
    SELECT *
    FROM workload_references
    WHERE counted AND problem IS NULL
),

in_effect AS (
    SELECT *
    FROM counted
    WHERE
        kind <> 'Pod'
        OR phase IN ('Running', 'Pending')
        OR getvariable('prune_over_size_limit')
        OR created IS NULL
        OR created >= getvariable('young_after')
)

SELECT ref_namespace, ref_name, tag, digest, kind, namespace, name, reference
FROM in_effect
