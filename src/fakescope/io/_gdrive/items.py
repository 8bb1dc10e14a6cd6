"""Drive paths and items: `gdrive://` URIs, name quoting, shortcuts, times and the order of same-named files."""

from __future__ import annotations

import datetime
from typing import Any

from fakescope.errors import StorageError

FOLDER_MIME = "application/vnd.google-apps.folder"
SHORTCUT_MIME = "application/vnd.google-apps.shortcut"
GOOGLE_MIME_PREFIX = "application/vnd.google-apps."
"""Google Docs, Sheets, Drawings...: no bytes to download (`alt=media` is refused), so never listed."""
FIELDS = "id,name,mimeType,shortcutDetails(targetId,targetMimeType)"


def split_drive_uri(uri: str) -> tuple[str, list[str]]:
    """Split `gdrive://folder-id/a/b%2Fc` into `("folder-id", ["a", "b/c"])`: `%2F` is a `/` within a name."""
    rest = uri[len("gdrive://"):]
    folder_id, *parts = [p for p in rest.split("/") if p] or [""]
    if not folder_id:
        raise StorageError(f"no folder id in {uri!r}; expected gdrive://folder-id/path")
    return folder_id, [p.replace("%2F", "/").replace("%2f", "/") for p in parts]


def uri_part(name: str) -> str:
    """A Drive name as one URI path part (Drive names may hold `/`)."""
    return name.replace("/", "%2F")


def quoted(name: str) -> str:
    """`name` as a string literal in a `files.list` query."""
    return name.replace("\\", "\\\\").replace("'", "\\'")


def oldest_first(item: dict[str, Any]) -> tuple:
    """Files of one name in the order every run sees: by `createdTime`, and of two made in one millisecond, by id."""
    return item["createdTime"], item["id"]


def drive_time(text: str) -> datetime.datetime:
    """A Drive time (RFC 3339, `Z`) as an aware datetime."""
    return datetime.datetime.fromisoformat(text)


def followed(item: dict[str, Any]) -> dict[str, Any]:
    """A shortcut as its target (under the shortcut's name, `shortcut` holding the shortcut's own id: its size and
    whether it is still there are the target's, which no listing gives); anything else as it is."""
    target = item.get("shortcutDetails")
    if item["mimeType"] != SHORTCUT_MIME or not target:
        return item
    return {"id": target["targetId"], "name": item["name"], "mimeType": target["targetMimeType"], "shortcut": item["id"]}
