-- stream_history: the manifests each ImageStream has, one row per (namespace, name, digest).
-- A stream has every image in some tag's history (status.tags[].items[], any position) and,
-- beyond the reference, the child manifests of the manifest lists it has.
-- One row per manifest an ImageStream has (namespace, name, digest).
-- Columns: namespace VARCHAR, name VARCHAR, digest VARCHAR
-- Variables: none
WITH tagged AS (
    SELECT DISTINCT namespace, name, image AS digest
    FROM imagestream_tags
    WHERE image IS NOT NULL
),

list_children AS (
    SELECT tagged.namespace, tagged.name, child.digest
    FROM tagged
    JOIN image_blobs AS child
        ON child.image = tagged.digest AND child.kind = 'manifest_list_child'
)

SELECT namespace, name, digest FROM tagged
UNION
SELECT namespace, name, digest FROM list_children
