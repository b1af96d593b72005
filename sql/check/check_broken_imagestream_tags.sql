-- check_broken_imagestream_tags: ImageStream tag history items that cannot be pulled.
-- kind 'image': the item's Image does not exist (missing = the image digest);
-- otherwise the managed Image (or a child of a manifest list) misses a blob in storage:
-- kind 'manifest', 'config' or 'layer' with the missing digest. position is the item's
-- place in the tag's history (0 = current). Limited to --namespace when given.
-- One row per tag history item and what it misses (namespace, name, tag, position, missing).
-- Columns: namespace VARCHAR, name VARCHAR, tag VARCHAR, position INTEGER, image VARCHAR,
--   missing VARCHAR, kind VARCHAR
-- Variables: namespace
WITH scoped_items AS (
    SELECT * FROM imagestream_tags WHERE in_scope(namespace) AND image IS NOT NULL
),

missing_images AS (
    SELECT scoped_items.*, scoped_items.image AS missing, 'image' AS kind
    FROM scoped_items
    ANTI JOIN images USING (image)
),

image_closure_missing AS (
    SELECT image, missing, kind FROM image_missing_blobs
    UNION
    SELECT list.image, child.missing, child.kind
    FROM image_blobs AS list
    JOIN image_missing_blobs AS child ON child.image = list.digest
    WHERE list.kind = 'manifest_list_child'
),

missing_blobs AS (
    SELECT scoped_items.*, closure.missing, closure.kind
    FROM scoped_items
    JOIN image_closure_missing AS closure USING (image)
)

SELECT namespace, name, tag, position, image, missing, kind FROM missing_images
UNION ALL
SELECT namespace, name, tag, position, image, missing, kind FROM missing_blobs
ORDER BY namespace, name, tag, position, missing
