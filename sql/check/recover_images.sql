-- recover_images: one row per lost-found candidate (check_lost_found) with everything its
-- Image needs: the manifest's media type and layer order (ascending, or descending for schema
-- 1), the config digest, the layers in manifest order with their sizes (schema 1 manifests
-- carry none: the stored blob's size is taken), and for a manifest list its child manifests
-- with size and platform. missing_children: children that are neither an Image already nor
-- restored here (a lost-found candidate of the same repository); such a list is not restored,
-- since its children's blobs would be kept by no Image. docker_image_reference names
-- $registry_host (--registry-host), else the host most managed Images name; NULL when
-- neither is known. Rows come in the order they are restored: manifests first, then lists,
-- so a list never exists without its children's Images.
-- One row per lost-found candidate to restore (repository, digest).
-- Columns: namespace VARCHAR, name VARCHAR, repository VARCHAR, digest VARCHAR, tag VARCHAR,
--   media_type VARCHAR, layer_order VARCHAR, is_list BOOLEAN, docker_image_reference VARCHAR,
--   config_digest VARCHAR, layers STRUCT(digest VARCHAR, size BIGINT, media_type VARCHAR)[],
--   manifests STRUCT(digest VARCHAR, media_type VARCHAR, size BIGINT, architecture VARCHAR,
--     os VARCHAR, variant VARCHAR)[],
--   missing_children VARCHAR[]
-- Variables: registry_host
WITH managed_hosts AS (
    SELECT split_part(docker_image_reference, '/', 1) AS host, count(*) AS images
    FROM images
    WHERE managed AND contains(docker_image_reference, '/')
    GROUP BY host
),

registry_host AS (
    SELECT coalesce(
        getvariable('registry_host'),
        (SELECT host FROM managed_hosts ORDER BY images DESC, host LIMIT 1)
    ) AS host
),

configs AS (
    SELECT digest, reference AS config_digest
    FROM lost_manifest_references
    WHERE kind = 'config'
),

layers AS (
    SELECT
        refs.digest,
        list(
            {
                'digest': refs.reference,
                'size': coalesce(refs.size, blobs.size),
                -- schema 1 layers have no media type; the registry gives them this one
                'media_type': CASE
                    WHEN manifests.layer_order = 'descending'
                        THEN schema1_layer_media_type()
                    ELSE refs.media_type
                END
            }
            ORDER BY refs.position
        ) AS layers
    FROM lost_manifest_references AS refs
    JOIN lost_manifests AS manifests USING (digest)
    LEFT JOIN blobs ON blobs.digest = refs.reference
    WHERE refs.kind = 'layer'
    GROUP BY refs.digest
),

children AS (
    SELECT
        digest,
        list(
            {
                'digest': reference,
                'media_type': media_type,
                'size': size,
                'architecture': architecture,
                'os': os,
                'variant': variant
            }
            ORDER BY position
        ) AS manifests
    FROM lost_manifest_references
    WHERE kind = 'manifest'
    GROUP BY digest
),

unrestorable_children AS (
    SELECT lost.repository, lost.digest, list(refs.reference ORDER BY refs.position) AS missing
    FROM check_lost_found AS lost
    JOIN lost_manifest_references AS refs USING (digest)
    ANTI JOIN images ON images.image = refs.reference
    ANTI JOIN check_lost_found AS restored
        ON restored.repository = lost.repository AND restored.digest = refs.reference
    WHERE refs.kind = 'manifest'
    GROUP BY lost.repository, lost.digest
)

SELECT
    lost.namespace,
    lost.name,
    lost.repository,
    lost.digest,
    lost.tag,
    manifests.media_type,
    manifests.layer_order,
    is_list_media_type(manifests.media_type) AS is_list,
    (SELECT host FROM registry_host) || '/' || lost.repository || '@' || lost.digest
        AS docker_image_reference,
    configs.config_digest,
    coalesce(layers.layers, []) AS layers,
    coalesce(children.manifests, []) AS manifests,
    coalesce(unrestorable_children.missing, []) AS missing_children
FROM check_lost_found AS lost
JOIN lost_manifests AS manifests USING (digest)
LEFT JOIN configs USING (digest)
LEFT JOIN layers USING (digest)
LEFT JOIN children USING (digest)
LEFT JOIN unrestorable_children USING (repository, digest)
ORDER BY is_list, lost.namespace, lost.name, lost.digest
