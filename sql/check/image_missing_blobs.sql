-- image_missing_blobs: for managed Images (openshift.io/image.managed=true, pushed to this
-- registry), each referenced blob absent from storage. Unmanaged Images live elsewhere.
-- kind: 'manifest' (the image's own manifest, or a child manifest of a list), 'config', 'layer'.
-- One row per missing blob of a managed Image (image, missing, kind).
-- Columns: image VARCHAR, missing VARCHAR, kind VARCHAR
-- Variables: none
SELECT DISTINCT
    image_blobs.image,
    image_blobs.digest AS missing,
    CASE image_blobs.kind WHEN 'manifest_list_child' THEN 'manifest' ELSE image_blobs.kind END
        AS kind
FROM image_blobs
JOIN images USING (image)
ANTI JOIN blobs USING (digest)
WHERE images.managed
