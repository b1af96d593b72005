-- plan_sanity: whether this metadata may decide deletions in this storage. A hard prune
-- deletes what the metadata does not keep, so an empty dump, a dump of another cluster or
-- Images that could not be read in full would make it delete images in use.
-- stored_manifests: distinct digests of manifest revision links in storage;
-- known_manifests: those that are an Image (known_fraction: their share);
-- image_anomalies: Images the snapshot could not read in full (metadata_anomalies of kind
-- Image: a name, layer or child manifest that is not a digest, ...).
-- problems: the reasons not to execute the plan, empty when there are none:
--   'no-images': no Images at all, while storage holds blobs (every one would go);
--   'no-known-manifests': Images, but not one of the stored manifests among them;
--   'unreadable-images': some Images could not be read (what they keep is unknown);
--   'unresolved-images': some Images name neither their config nor their children and their
--   stored manifest could not be read either (image_manifests_to_read without a parsed
--   young_manifests row): what they keep is unknown;
--   and the problems of view_coverage ('streams-missing', 'images-missing'): the metadata is
--   a view of a part of the cluster, so repositories or blobs in use would be deleted.
-- One row per snapshot: exactly one row.
-- Columns: images BIGINT, blobs BIGINT, stored_manifests BIGINT, known_manifests BIGINT,
--   known_fraction DOUBLE, image_anomalies BIGINT, unresolved_images BIGINT, problems VARCHAR[]
-- Variables: none
WITH stored_manifests AS (
    SELECT DISTINCT digest FROM manifest_links
),

counts AS (
    SELECT
        (SELECT count(*) FROM images) AS images,
        (SELECT count(*) FROM blobs) AS blobs,
        (SELECT count(*) FROM stored_manifests) AS stored_manifests,
        (
            SELECT count(*) FROM stored_manifests
            SEMI JOIN images ON images.image = stored_manifests.digest
        ) AS known_manifests,
        (SELECT count(*) FROM metadata_anomalies WHERE kind = 'Image') AS image_anomalies,
        (
            SELECT count(*) FROM image_manifests_to_read
            ANTI JOIN (
                SELECT digest FROM young_manifests WHERE problem IS NULL
            ) AS parsed USING (digest)
        ) AS unresolved_images
)

SELECT
    images,
    blobs,
    stored_manifests,
    known_manifests,
    known_manifests / nullif(stored_manifests, 0) AS known_fraction,
    image_anomalies,
    unresolved_images,
    list_concat(
        list_filter(
            [
                CASE WHEN images = 0 AND blobs > 0 THEN 'no-images' END,
                CASE
                    WHEN images > 0 AND stored_manifests > 0 AND known_manifests = 0
                        THEN 'no-known-manifests'
                END,
                CASE WHEN image_anomalies > 0 THEN 'unreadable-images' END,
                CASE WHEN unresolved_images > 0 THEN 'unresolved-images' END
            ],
            lambda problem: problem IS NOT NULL  -- noqa: CP01
        ),
        coverage.problems
    ) AS problems
FROM counts
CROSS JOIN (SELECT problems FROM view_coverage) AS coverage
