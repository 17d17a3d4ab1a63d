"""The LanceDB database as a Dagster resource: a thin handle over `core.store.LanceStore`."""

from dagster import ConfigurableResource

from embedding_assets.core.retained import DEFAULT_RETENTION_DAYS
from embedding_assets.core.store import LanceStore, s3_storage_options


class LanceDBResource(ConfigurableResource):
    """The LanceDB database holding documents, signatures, vectors (live and retained), quarantine and aliases."""

    uri: str
    # For s3:// URIs: the standard AWS_ENDPOINT_URL, AWS_REGION and AWS_ALLOW_HTTP settings.
    aws_endpoint_url: str = ""
    aws_region: str = ""
    aws_allow_http: bool = False
    # Days the vectors of deleted or changed content stay reusable (`core.retained`) before the daily
    # garbage collection drops them: restoring a document within them costs no model call.
    retained_vector_days: int = DEFAULT_RETENTION_DAYS

    def store(self) -> LanceStore:
        options = s3_storage_options(self.aws_endpoint_url, self.aws_region, self.aws_allow_http)
        return LanceStore(self.uri, options if self.uri.startswith("s3://") else None)
