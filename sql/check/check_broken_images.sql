-- check_broken_images: managed Images that miss a blob in storage, tagged or not.
-- With --namespace: the Images that namespace's streams have, or whose
-- dockerImageReference points into it (Images themselves are cluster-scoped).
-- One row per missing blob of a managed Image (image, missing).
-- Columns: image VARCHAR, missing VARCHAR, kind VARCHAR
-- Variables: namespace
WITH namespace_images AS (
    SELECT image FROM imagestream_tags WHERE in_scope(namespace)
    UNION
    SELECT image FROM images
    WHERE in_scope(regexp_extract(docker_image_reference, '^[^/]+/([^/]+)/', 1))
)

SELECT image_missing_blobs.image, missing, kind
FROM image_missing_blobs
SEMI JOIN namespace_images USING (image)
ORDER BY image, kind, missing
