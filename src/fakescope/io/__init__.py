"""Reading images and inputs: format sniffing, safe decoding, input expansion and storage URIs."""

from fakescope.io.image import LoadedImage, decode_image, load_image, load_source, sniff_format
from fakescope.io.inputs import iter_sources
from fakescope.io.storage import (
    Storage,
    exists,
    get_storage,
    is_remote,
    join,
    list_files,
    read_bytes,
    write_bytes,
)

__all__ = [
    "LoadedImage", "decode_image", "load_image", "load_source", "sniff_format", "iter_sources",
    "Storage", "exists", "get_storage", "is_remote", "join", "list_files", "read_bytes", "write_bytes",
]
