-- projected_images: the snapshot's Images as prune-images' plan would leave them: those
-- images_plan deletes are absent (a hard prune's dry run planned over the cluster as it would
-- be after prune-images, flows/nightly_gc.py; never for deleting: its Images still exist).
-- images_plan is the Parquet of a prune-images run folder, attached as a table.
-- One row per Image of the snapshot that prune-images' plan keeps (image).
-- Columns: image VARCHAR, managed BOOLEAN, media_type VARCHAR, docker_image_reference VARCHAR,
--   config_digest VARCHAR, created TIMESTAMPTZ
-- Variables: none
SELECT images.*
FROM images
ANTI JOIN images_plan AS deleted
    ON deleted.image = images.image AND deleted.action = 'delete'
