-- images_tag_revisions: what prune-images does with every tag revision (status.tags[].items[],
-- position 0 = newest) of every ImageStream in scope (--namespace: that namespace only), in
-- oc's order of rules (sql/prune-images-rules.md, "Tag revisions"); the first rule that
-- applies decides. Kept reasons:
--   'stream-young'          the stream was created after the cutoff (or at an unknown time);
--   'young'                 the revision was created after the cutoff (or at an unknown time);
--   'anomalous-tag'         the tag has no usable name (metadata_anomalies): never touched;
--   'in-use-by-tag'         revision 0 of a tag a workload uses (ns/name:tag);
--   'within-size-limit'     --prune-over-size-limit: the Image does not exceed (or its size or
--                           the limit is unknown);
--   'within-keep-revisions' position < --keep-tag-revisions;
--   'in-use-by-digest'      a workload uses ns/name@digest of this revision.
-- Removed reasons: 'image-missing' (no such Image, as oc: no grace), 'over-size-limit',
-- 'old-revision'. Age rules do not apply with --prune-over-size-limit (as in oc).
-- One row per tag revision (namespace, name, tag, position); action 'keep' | 'remove'.
-- Columns: namespace VARCHAR, name VARCHAR, tag VARCHAR, position INTEGER, image VARCHAR,
--   created TIMESTAMPTZ, action VARCHAR, reason VARCHAR
-- Variables: keep_tag_revisions, namespace, prune_over_size_limit, young_after
WITH streams AS (
    SELECT namespace, name, created
    FROM imagestreams
    WHERE in_scope(namespace)
),

revisions AS (
    SELECT
        t.namespace, t.name, t.tag, t.position, t.image, t.created,
        s.created AS stream_created
    FROM imagestream_tags AS t
    JOIN streams AS s USING (namespace, name)
),

used_tags AS (
    SELECT DISTINCT ref_namespace, ref_name, tag
    FROM images_workload_uses
    WHERE tag IS NOT NULL
),

used_digests AS (
    SELECT DISTINCT ref_namespace, ref_name, digest
    FROM images_workload_uses
    WHERE digest IS NOT NULL
),

image_limits AS (
    -- the smallest image limit of each namespace; an unparsable one limits nothing
    SELECT namespace, min(max_storage) AS max_storage
    FROM limit_ranges
    WHERE max_storage IS NOT NULL
    GROUP BY namespace
),

facts AS (
    SELECT
        r.*,
        ut.tag IS NOT NULL AS tag_used,
        ud.digest IS NOT NULL AS digest_used,
        i.image IS NOT NULL AS image_exists,
        coalesce(sz.size > l.max_storage, false) AS exceeds_limit
    FROM revisions AS r
    LEFT JOIN used_tags AS ut
        ON ut.ref_namespace = r.namespace AND ut.ref_name = r.name AND ut.tag = r.tag
    LEFT JOIN used_digests AS ud
        ON ud.ref_namespace = r.namespace AND ud.ref_name = r.name AND ud.digest = r.image
    LEFT JOIN images AS i ON i.image = r.image
    LEFT JOIN image_sizes AS sz ON sz.image = r.image
    LEFT JOIN image_limits AS l ON l.namespace = r.namespace
),

decided AS (
    SELECT
        *,
        CASE
            WHEN NOT getvariable('prune_over_size_limit') AND young(stream_created)
                THEN 'stream-young'
            WHEN tag IS NULL THEN 'anomalous-tag'
            WHEN NOT getvariable('prune_over_size_limit') AND young(created) THEN 'young'
            WHEN position = 0 AND tag_used THEN 'in-use-by-tag'
            WHEN NOT image_exists THEN 'image-missing'
            WHEN getvariable('prune_over_size_limit') AND NOT exceeds_limit
                THEN 'within-size-limit'
            WHEN NOT getvariable('prune_over_size_limit')
                AND position < getvariable('keep_tag_revisions')
                THEN 'within-keep-revisions'
            WHEN digest_used THEN 'in-use-by-digest'
            WHEN getvariable('prune_over_size_limit') THEN 'over-size-limit'
            ELSE 'old-revision'
        END AS reason
    FROM facts
)

SELECT
    namespace, name, tag, position, image, created,
    CASE
        WHEN reason IN ('image-missing', 'over-size-limit', 'old-revision') THEN 'remove'
        ELSE 'keep'
    END AS action,
    reason
FROM decided
