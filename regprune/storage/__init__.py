"""Where the registry keeps its bytes, behind one interface (``base.Storage``) with one backend
per kind of storage, as distribution's ``driver`` packages: ``local`` (a folder), ``s3``, ``gcs``,
``azure`` and ``swift`` (those three import their client libraries only when opened: extras
``regprune[gcs]``, ``regprune[azure]``, ``regprune[swift]``).
``config`` turns a URL or the registry's config.yml into a :class:`StorageSpec` and opens it.

A :class:`StorageSpec` is plain data (picklable), so a task on any worker can reopen the storage;
credentials stay in ``options`` and are never printed: use :attr:`StorageSpec.display`.
"""

from regprune.storage.base import (
    EMPTY_FOLDER,
    LISTED_STAT_MIN_DEPTH,
    LISTING_SCHEMA,
    Storage,
    StorageConfigError,
    StorageListingError,
    StorageObject,
    StorageSpec,
    folder_marker,
    listing_table,
    modification_time,
)
from regprune.storage.config import (
    CREDENTIALS_ELSEWHERE,
    SUPPORTED_DRIVERS,
    URL_FORMS,
    check_options_hold_no_secrets,
    open_storage,
    parse_storage_option,
    resolve_storage,
    storage_from_registry_config,
    url_holds_credentials,
)
from regprune.storage.dryrun import DryRunStorage
from regprune.storage.local import LocalStorage
from regprune.storage.s3 import S3Storage

__all__ = [
    "CREDENTIALS_ELSEWHERE",
    "EMPTY_FOLDER",
    "LISTED_STAT_MIN_DEPTH",
    "LISTING_SCHEMA",
    "SUPPORTED_DRIVERS",
    "URL_FORMS",
    "DryRunStorage",
    "LocalStorage",
    "S3Storage",
    "Storage",
    "StorageConfigError",
    "StorageListingError",
    "StorageObject",
    "StorageSpec",
    "check_options_hold_no_secrets",
    "folder_marker",
    "listing_table",
    "modification_time",
    "open_storage",
    "parse_storage_option",
    "resolve_storage",
    "storage_from_registry_config",
    "url_holds_credentials",
]
