"""Google Drive backend (Drive v3 through google-api-python-client).

`gdrive://FOLDER_ID/sub/path/name.png` names a file by its path below a Drive folder; a `/` within a
name (Drive allows it) is written `%2F`, as listings give it. Of several items of one name in a folder
(Drive allows that too) the oldest is the one read, written over and listed (the others with a warning); a folder
this process made where another made one of that name at the same moment is deleted while empty, so both write
into the oldest. Credentials:
a file named by `GOOGLE_APPLICATION_CREDENTIALS` (a service-account key, or the authorized-user file
`gcloud auth application-default login` writes), an OAuth authorized-user token file named by
`FAKESCOPE_GDRIVE_TOKEN`, or Google's application-default credentials; a file that cannot be used is
named in the error, never quoted.
`FAKESCOPE_GDRIVE_ENDPOINT` (e.g. `http://127.0.0.1:8080`) points the client at another server.
Shortcuts are followed (each folder walked once): a shortcut's size, and whether it names a file at all, are its
target's, asked for by `size`, `exists` and a read (one request; no page gives them: `list_sizes` asks in Drive's
batches, each target once, 100 a request, None for one not answered); one whose target was deleted or trashed names
none. Google Docs Editors files have no bytes and are not listed.
Each storage object remembers the ids of the folders it found or made along paths, so a file costs one look-up
however deep it lies; where Drive answers 404 for a remembered id (the folder was deleted), they are forgotten and
the path walked again (a folder moved or trashed meanwhile still answers: its id is looked up again once it is
`FOLDER_TTL_S` old). Only folders that exist are remembered, never a name found missing, nor any file.
Rate limits, 5xx answers and dropped connections are retried `RETRIES` times by the client library, with
exponential backoff and a `googleapiclient.http` warning each; one that outlasts them raises
`StorageBusyError` (a `StorageUnavailableError`: the storage, not the file, failed; a scan records it as transient).
A server name that does not resolve (a mistyped
`FAKESCOPE_GDRIVE_ENDPOINT`) raises it at once, before the first request, where the client would retry it for a
minute; a temporary resolver failure is retried.
"""

from fakescope.io._gdrive.calls import RETRIES
from fakescope.io._gdrive.store import DriveStorage

__all__ = ["DriveStorage", "RETRIES"]
