-- projected_image_blobs: what the Images of projected_images reference: the snapshot's
-- image_blobs without the rows of the Images prune-images' plan (images_plan) deletes. A
-- digest a kept Image also references stays through that Image's own rows.
-- One row per reference of a kept Image to a digest (image, digest, kind, position).
-- Columns: image VARCHAR, digest VARCHAR, kind VARCHAR, position INTEGER, size BIGINT
-- Variables: none
SELECT image_blobs.*
FROM image_blobs
ANTI JOIN images_plan AS deleted
    ON deleted.image = image_blobs.image AND deleted.action = 'delete'
