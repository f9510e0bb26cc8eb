"""Volumes: named storage mounted into function containers (see ``docs/architecture.md`` §4b).

- ``_registry``: the volume registry of the control plane's host (``$APOTHIC_HOME/volumes``);
- ``_s3``: S3 clients, where cloud volumes live, what an S3 error means;
- ``_sync``: a folder kept in step with an S3 prefix (bucket mounts, cloud volumes);
- ``_files``: the files of one volume, a folder or an S3 prefix;
- ``_sdk``: create, list, delete and the file methods of ``Volume``;
- ``_deploy``: the check of mounted volumes at deploy.

Nothing here imports boto3 until an S3 client is made.
"""

from ._files import FileEntry
from ._sdk import VolumeInfo, VolumeMethods

__all__ = ["FileEntry", "VolumeInfo", "VolumeMethods"]
