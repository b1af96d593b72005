-- projected_imagestream_tags: the streams' tag histories as prune-images' plan would leave
-- them: without the revisions images_tag_revisions removes. A history item is gone when a
-- removed revision of the same stream, tag and Image is at or above its position (what
-- regprune/images_execute.py removes: an item that moved up since the plan, someone having
-- removed newer ones, is kept); of one Image planned at several positions, the oldest
-- (highest position) counts, so a projection that cannot tell keeps the item. Positions
-- stay as in the snapshot (the hard prune reads histories as sets).
-- One row per history item that prune-images' plan keeps (namespace, name, tag, position).
-- Columns: namespace VARCHAR, name VARCHAR, tag VARCHAR, position INTEGER, image VARCHAR,
--   docker_image_reference VARCHAR, created TIMESTAMPTZ
-- Variables: none
WITH removed AS (
    SELECT namespace, name, tag, image, max(position) AS position
    FROM images_tag_revisions
    WHERE action = 'remove'
    GROUP BY namespace, name, tag, image
)

SELECT items.*
FROM imagestream_tags AS items
ANTI JOIN removed
    ON removed.namespace = items.namespace
    AND removed.name = items.name
    AND removed.tag = items.tag
    AND removed.image = items.image
    AND items.position >= removed.position
