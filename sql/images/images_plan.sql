-- images_plan: what prune-images does with every Image (sql/prune-images-rules.md,
-- "Images"); the first rule that applies decides. Kept reasons:
--   'namespace-mode'     --namespace given: Images are never deleted (as oc);
--   'held-by-revision'   a remaining tag revision holds it;
--   'child-of-held-list' a child manifest of a held manifest list;
--   'in-use-by-digest'   a workload references its digest (any host or stream: stricter
--                        than oc, which keeps only the named stream's revision);
--   'unmanaged'          --all=false and not openshift.io/image.managed=true;
--   'young'              created after the cutoff or at an unknown time (not with
--                        --prune-over-size-limit).
-- Deleted: 'unreferenced'.
-- One row per Image; action 'keep' | 'delete'.
-- Columns: image VARCHAR, managed BOOLEAN, created TIMESTAMPTZ, action VARCHAR, reason VARCHAR
-- Variables: all_images, namespace, prune_over_size_limit, young_after
WITH used_digests AS (
    SELECT DISTINCT digest AS image FROM images_workload_uses WHERE digest IS NOT NULL
),

decided AS (
    SELECT
        i.image, i.managed, i.created,
        CASE
            WHEN getvariable('namespace') IS NOT NULL THEN 'namespace-mode'
            WHEN h.reason IS NOT NULL THEN h.reason
            WHEN u.image IS NOT NULL THEN 'in-use-by-digest'
            WHEN NOT getvariable('all_images') AND NOT coalesce(i.managed, false) THEN 'unmanaged'
            WHEN NOT getvariable('prune_over_size_limit') AND young(i.created) THEN 'young'
            ELSE 'unreferenced'
        END AS reason
    FROM images AS i
    LEFT JOIN images_held AS h USING (image)
    LEFT JOIN used_digests AS u USING (image)
)

SELECT
    image, managed, created,
    CASE WHEN reason = 'unreferenced' THEN 'delete' ELSE 'keep' END AS action,
    reason
FROM decided
