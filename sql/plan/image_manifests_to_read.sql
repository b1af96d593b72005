-- image_manifests_to_read: Images whose metadata does not say in full what they reference,
-- so their stored manifest is read before any blob can be proven unreferenced (a prune keeps
-- every blob such a manifest references, plan_unknown_manifests / plan_blobs):
-- a single-manifest Image (schema 2, OCI, or no media type) without a config digest, i.e. kept
-- without dockerImageMetadata and without the dockerImageManifest text; or a manifest list
-- without any child. Schema 1 manifests have no config blob.
-- One row per Image to read (digest).
-- Columns: digest VARCHAR
-- Variables: none
WITH listed_children AS (
    SELECT DISTINCT image FROM image_blobs WHERE kind = 'manifest_list_child'
)

SELECT images.image AS digest
FROM images
WHERE images.config_digest IS NULL
    AND NOT is_list_media_type(coalesce(images.media_type, ''))
    AND NOT is_schema1_media_type(coalesce(images.media_type, ''))
UNION
SELECT images.image AS digest
FROM images
ANTI JOIN listed_children USING (image)
WHERE is_list_media_type(images.media_type)
