"""The object-storage backend a deployment uses, chosen by configuration
(``storage_backend``): the encrypted local store or S3. The backends depend on the
``ObjectStorage`` interface in ``drs_store.storage``; only this module knows them all."""

from __future__ import annotations

from urllib.parse import urlsplit

from drs_store.storage import ObjectStorage
from helixgate.config import Settings
from helixgate.errors import ConfigurationError


def make_storage(settings: Settings) -> ObjectStorage:
    """Build the backend named by ``settings.storage_backend``."""
    if settings.storage_backend == "local":
        from drs_store.local_storage import LocalStorage

        return LocalStorage.from_data_dir(settings.data_dir)
    if settings.storage_backend == "s3":
        from drs_store.s3_storage import S3Storage

        if not settings.s3_bucket:
            raise ConfigurationError(
                "invalid setting s3_bucket (HELIXGATE_S3_BUCKET): required when storage_backend is s3"
            )
        # Buckets other than our own must be allow-listed for registration as "s3://<bucket>".
        extra = frozenset(urlsplit(entry).netloc for entry in settings.outbound_allow_list if entry.startswith("s3://"))
        return S3Storage(
            settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url or None,
            region=settings.s3_region,
            sse=settings.s3_sse,
            kms_key_id=settings.s3_kms_key_id or None,
            registration_buckets=extra,
        )
    raise ConfigurationError(f"invalid setting storage_backend: {settings.storage_backend!r} is not local or s3")
