-- images_sanity: whether the metadata may decide what prune-images removes; the plan is
-- refused (nothing removed) when problems is not empty:
--   'invalid-references': workload references that do not parse (oc aborts the same way),
--                         unless --ignore-invalid-refs;
--   'no-images':          ImageStreams have revisions but there are no Images at all (a failed
--                         or partial dump: every revision would go as 'image-missing');
--   'unreadable-images':  some Images could not be read (metadata_anomalies of kind Image).
-- One row per snapshot: exactly one row.
-- Columns: invalid_references BIGINT, image_anomalies BIGINT, images BIGINT, revisions BIGINT,
--   problems VARCHAR[]
-- Variables: ignore_invalid_refs
WITH counts AS (
    SELECT
        (SELECT count(*) FROM workload_references WHERE problem IS NOT NULL)
            AS invalid_references,
        (SELECT count(*) FROM metadata_anomalies WHERE kind = 'Image') AS image_anomalies,
        (SELECT count(*) FROM images) AS images,
        (SELECT count(*) FROM imagestream_tags) AS revisions
)

SELECT
    *,
    list_filter(
        [
            CASE
                WHEN invalid_references > 0 AND NOT getvariable('ignore_invalid_refs')
                    THEN 'invalid-references'
            END,
            CASE WHEN images = 0 AND revisions > 0 THEN 'no-images' END,
            CASE WHEN image_anomalies > 0 THEN 'unreadable-images' END
        ],
        lambda problem: problem IS NOT NULL  -- noqa: CP01
    ) AS problems
FROM counts
