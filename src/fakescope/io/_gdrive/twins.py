"""The lease's twin files: several files of one name in one folder, each read, written and deleted by its id."""

from __future__ import annotations

import datetime
import io
from typing import Any

from fakescope.io._gdrive.calls import checked, execute
from fakescope.io._gdrive.errors import translated_errors
from fakescope.io._gdrive.folders import DriveFolders
from fakescope.io._gdrive.items import drive_time, oldest_first, split_drive_uri


class DriveTwins(DriveFolders):
    """Files that share a name in one folder (Drive allows it), for `fakescope.generate.lease`."""

    def create_twin(self, uri: str, data: bytes) -> tuple[str, datetime.datetime]:
        """Write `data` as a new file at `uri`, beside any file of that name (Drive keeps both; `write_bytes` would
        write over the oldest): its id and creation time, by Drive's clock."""
        from googleapiclient.http import MediaIoBaseUpload

        folder_id, parts = split_drive_uri(uri)

        def create(parent: str, cached: bool) -> dict[str, str]:
            media = MediaIoBaseUpload(io.BytesIO(data), mimetype="application/octet-stream")
            return checked(self.service.files().create(body={"name": parts[-1], "parents": [parent]}, media_body=media,
                                                       fields="id,createdTime", supportsAllDrives=True), cached)

        with translated_errors("write", uri):
            made = self._in_folder(folder_id, parts[:-1], create, make=True)
        assert made is not None  # made where missing
        return made["id"], drive_time(made["createdTime"])

    def twins(self, uri: str) -> list[dict[str, Any]]:
        """The live files named as `uri` (its oldest first): `id`, and `createdTime`, `modifiedTime` by Drive's clock."""
        folder_id, parts = split_drive_uri(uri)
        with translated_errors("list", uri):
            found = self._in_folder(folder_id, parts[:-1], lambda parent, cached: self._list_named(
                parent, parts[-1], "files(id,createdTime,modifiedTime)", cached)) or []
        items = [{**item, "createdTime": drive_time(item["createdTime"]), "modifiedTime": drive_time(item["modifiedTime"])}
                 for item in found]
        return sorted(items, key=oldest_first)

    def read_id(self, file_id: str, uri: str) -> bytes:
        """The bytes of the file `file_id` (one of `uri`'s twins)."""
        with translated_errors("read", uri):
            return execute(self.service.files().get_media(fileId=file_id, supportsAllDrives=True))

    def rewrite_id(self, file_id: str, uri: str, data: bytes) -> datetime.datetime | None:
        """Write `data` over the file `file_id` (one of `uri`'s twins): its new `modifiedTime`, or None where it is gone."""
        from googleapiclient.errors import HttpError
        from googleapiclient.http import MediaIoBaseUpload

        media = MediaIoBaseUpload(io.BytesIO(data), mimetype="application/octet-stream")
        with translated_errors("write", uri):
            try:
                return drive_time(execute(self.service.files().update(
                    fileId=file_id, media_body=media, fields="modifiedTime", supportsAllDrives=True))["modifiedTime"])
            except HttpError as exc:
                if int(exc.resp.status) == 404:
                    return None
                raise

    def delete_id(self, file_id: str, uri: str) -> None:
        """Delete the file `file_id` (one of `uri`'s twins) for good; one gone already is no error."""
        from googleapiclient.errors import HttpError

        with translated_errors("write", uri):
            try:
                execute(self.service.files().delete(fileId=file_id, supportsAllDrives=True))
            except HttpError as exc:
                if int(exc.resp.status) != 404:
                    raise
