"""Where Parquet exports go: an s3:// prefix, through dagster-aws's S3Resource, or a local folder."""

from pathlib import Path

from dagster import ConfigurableResource
from dagster_aws.s3 import S3Resource


class ParquetExportResource(ConfigurableResource):
    uri: str
    s3: S3Resource

    def put(self, location: str, data: bytes) -> None:
        if location.startswith("s3://"):
            bucket, _, key = location.removeprefix("s3://").partition("/")
            self.s3.get_client().put_object(Bucket=bucket, Key=key, Body=data)
            return
        path = Path(location)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(path.suffix + ".partial")
        partial.write_bytes(data)
        partial.replace(path)
