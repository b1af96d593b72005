"""The whole nightly GC as one flow run: what OpenShift's ImagePruner CronJob does
(``oc adm prune images --keep-tag-revisions=3 --keep-younger-than=60m --confirm``), then the
hard prune of the registry's storage.

DAG::

    prune-images (flows/prune_images.py, subflow): tag revisions and Images
        -> prune (flows/prune.py, subflow): links and blobs nothing keeps any more

One run, so the hard prune plans only after the Images are gone (it snapshots the cluster
after them) and a deployment's ``concurrency_limit: 1`` keeps two nights from overlapping.
A dry run unless ``confirm``: then neither step changes anything, and the hard prune plans
over the cluster as prune-images' plan would leave it (``project_images_plan``: the Images it
deletes absent, the tag revisions it removes gone from the histories,
sql/images/projected_*.sql), so the dry run names the links and blobs the confirmed run frees;
its report and summary say the numbers are projected. The confirmed run never projects: it
snapshots the cluster after prune-images really deleted, and plans over that (a projected plan
refuses to delete).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from regprune.flows.prune import UnsafePlan, prune_flow
from regprune.flows.prune_images import prune_images_flow
from regprune.images_plan import PruneImagesSettings
from regprune.models import DuckDBSettings
from regprune.registry import RegistryAPI
from regprune.results import NightlyResult
from regprune.runners import ChosenTaskRunner
from regprune.snapshots import SnapshotSource, new_run_folder
from regprune.units import Duration


@flow(name="regprune-nightly-gc", log_prints=True, task_runner=ChosenTaskRunner())
def nightly_gc_flow(
    source: SnapshotSource,
    keep_tag_revisions: int = 3,
    keep_younger_than: Duration = "60m",
    all_images: bool = True,
    ignore_invalid_refs: bool = False,
    hard_prune_keep_younger_than: Duration = "24h",
    upload_max_age: Duration = "7d",
    confirm: bool = False,
    out: str | None = None,
    duckdb: DuckDBSettings | None = None,
    registry_url: str | None = None,
    registry_token_file: str | None = None,
) -> NightlyResult:
    """Prune Images as ``oc adm prune images`` does, then hard-prune the storage they freed.

    Args:
        source: the registry's storage and the cluster (metadata must be kube).
        keep_tag_revisions: revisions kept per tag (oc's CronJob default 3).
        keep_younger_than: Images and revisions younger than this are kept (oc's default 60m).
        all_images: also prune Images not managed by OpenShift (oc's --all).
        ignore_invalid_refs: skip workload references that do not parse instead of refusing.
        hard_prune_keep_younger_than: the hard prune's grace period on storage times.
        upload_max_age: age after which an unfinished upload is removed by the hard prune.
        confirm: remove for real: tag revisions, Images, then links and blobs.
        out: folder for both steps' results (default regprune-runs/nightly-gc-<time>).
        duckdb: memory limit, spill directory and threads for both plans.
        registry_url: the running registry, for the hard prune's cache handling.
        registry_token_file: its bearer token.
    """
    metadata = source.metadata_source()
    if not metadata.is_kube:
        raise UnsafePlan("the nightly GC reads and changes the cluster: metadata must be kube")
    if not (source.storage or source.registry_config):
        raise UnsafePlan("the nightly GC needs the registry's storage (or registry_config)")
    if confirm and registry_url:
        # asked before prune-images changes anything, not only before the hard prune
        RegistryAPI(registry_url, registry_token_file, metadata).preflight()
    run_dir = Path(out or new_run_folder("nightly-gc"))
    run_dir.mkdir(parents=True, exist_ok=True)
    settings = PruneImagesSettings(
        keep_tag_revisions=keep_tag_revisions,
        keep_younger_than=keep_younger_than,
        all_images=all_images,
        ignore_invalid_refs=ignore_invalid_refs,
    )
    images = prune_images_flow(
        settings=settings,
        metadata=metadata,
        out=str(run_dir / "prune-images"),
        confirm=confirm,
        duckdb=duckdb,
    )
    storage = prune_flow(
        source=source,
        out=str(run_dir / "hard-prune"),
        keep_younger_than=hard_prune_keep_younger_than,
        upload_max_age=upload_max_age,
        confirm=confirm,
        duckdb=duckdb,
        registry_url=registry_url,
        registry_token_file=registry_token_file,
        project_images_plan=None if confirm else images.run_dir,
    )
    projected = " (projected from prune-images' plan)" if not confirm else ""
    text = "Prune images:\n" + images.text + f"\nHard prune{projected}:\n" + storage.text
    print(text)
    return NightlyResult(
        str(run_dir),
        text,
        failed=images.failed + storage.failed,
        prune_images=images,
        hard_prune=storage,
    )
