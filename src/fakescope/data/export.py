"""Export a manifest's images for moving to another machine: a folder tree, one tar, or a uint8 pack.

- `folders`: `<out>/<split>/<label>/<stem>-<sha256 prefix><suffix>` (copies of one file under one
  name numbered `-2`, `-3` ...) plus `manifest.parquet` and `manifest.csv` with relative uris;
  `out` may be any storage URI, but not a folder holding an earlier export (its images would stay).
- `tar`: the same tree and manifests inside one `.tar` file (original encoded bytes), streamed
  to a local file image by image (a remote one is assembled in memory).
- `npy` / `safetensors`: decoded RGB crops of `size` x `size` as one uint8 array `(N, size, size, 3)`
  plus labels (1 = ai), with a `.parquet` manifest beside it whose row order is the pack's. A local
  `.npy` is streamed crop by crop; a `.safetensors` pack (and a remote `.npy`) is built in memory.
"""

from __future__ import annotations

import io
import os
import tarfile
from typing import TYPE_CHECKING

import numpy as np

from fakescope.data.manifest import manifest_files, refuse_overwrite, validate_manifest, write_manifest
from fakescope.errors import ConfigError, ImageLoadError
from fakescope.io import storage
from fakescope.io.image import check_signature, decode_image

if TYPE_CHECKING:
    import pandas as pd

LAYOUTS = ("folders", "tar", "npy", "safetensors")


def layout_for(out: str) -> str:
    """The layout `out`'s suffix names (`.tar`, `.npy`, `.safetensors`), else `folders`."""
    suffix = os.path.splitext(out.rstrip("/"))[1].lower().lstrip(".")
    return suffix if suffix in LAYOUTS[1:] else "folders"


def export_manifest(frame: pd.DataFrame, out: str, *, layout: str | None = None, size: int = 256,
                    manifest: str | None = None) -> pd.DataFrame:
    """Write the manifest's images to `out` in one of `LAYOUTS`; returns the exported manifest.

    Args:
        frame: The manifest to export.
        out: Folder (or storage URI) for `folders`; file path for `tar`, `npy` and `safetensors`.
        layout: `folders`, `tar`, `npy` or `safetensors`; by default the one `out`'s suffix names (`layout_for`).
        size: Crop side for the array packs: a centre crop at native resolution, after
            upscaling the shorter side to `size` only where the image is smaller.
        manifest: The file `frame` was read from: an export that would write over it (`faces.npy`
            writes `faces.parquet` beside it) is refused before anything is written.

    Example:
        >>> export_manifest(frame, "faces.safetensors", size=128)  # doctest: +SKIP
    """
    layout = layout or layout_for(out)
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown export layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    refuse_overwrite(_written(out, layout), [manifest] if manifest else [])
    if layout == "folders" and storage.exists(storage.join(out, "manifest.parquet")):
        raise ConfigError(f"{out} already holds an export (its manifest.parquet), whose images would stay among these; "
                          "export into a new folder, or remove that one first")
    frame = validate_manifest(frame)
    exported = _with_relative_names(frame)
    if layout == "folders":
        for source, target in zip(frame["uri"], exported["uri"]):
            storage.write_bytes(storage.join(out, target), _image_bytes(source))
        write_manifest(exported, storage.join(out, "manifest.parquet"), csv_copy=True)
    elif layout == "tar":
        _write_tar(frame, exported, out)
    else:
        labels = (frame["label"] == "ai").to_numpy(dtype=np.uint8)
        if layout == "npy":
            _stream_npy(frame["uri"], size, out)
            storage.write_bytes(os.path.splitext(out)[0] + ".labels.npy", _npy_bytes(labels))
        else:
            _write_safetensors(_crop_pack(frame["uri"], size), labels, out)
        write_manifest(exported.assign(uri=frame["uri"]), os.path.splitext(out)[0] + ".parquet")
    return exported


def _written(out: str, layout: str) -> list[str]:
    """The files an export to `out` writes besides the images."""
    if layout == "folders":
        return manifest_files(storage.join(out, "manifest.parquet"), csv_copy=True)
    base = os.path.splitext(out)[0]
    return [out] if layout == "tar" else [out, base + ".parquet", base + ".labels.npy"]


def centre_crop(image: object, size: int) -> np.ndarray:
    """Centre `size` x `size` crop of a PIL RGB image at native scale (upscaled only if too small)."""
    from PIL import Image

    width, height = image.size
    if min(width, height) < size:
        scale = size / min(width, height)
        image = image.resize((max(size, round(width * scale)), max(size, round(height * scale))), Image.Resampling.BICUBIC)
        width, height = image.size
    left, top = (width - size) // 2, (height - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


def _with_relative_names(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with relative uris (`_relative_names`); a `source_uri` naming an exported row follows it, so the link
    from an ai image to its real one survives the move."""
    names = _relative_names(frame)
    exported = frame.assign(uri=names)
    if "source_uri" in frame:
        renamed = dict(zip(frame["uri"], names))
        exported["source_uri"] = [renamed.get(s, s) for s in frame["source_uri"]]
    return exported


def _relative_names(frame: pd.DataFrame) -> list[str]:
    """`<split>/<label>/<stem>-<sha256 prefix><suffix>`, numbered `-2`, `-3` ... where that repeats (copies of one file)."""
    names, seen = [], set()
    for uri, split, label, digest in zip(frame["uri"], frame["split"], frame["label"], frame["sha256"]):
        stem, suffix = os.path.splitext(uri.rsplit("/", 1)[-1])
        base = f"{split or 'unsplit'}/{label}/{stem}-{digest[:8]}"
        name, copy = base + suffix.lower(), 1
        while name.lower() in seen:  # `X-...` and `x-...` are one file on some file systems
            copy += 1
            name = f"{base}-{copy}{suffix.lower()}"
        seen.add(name.lower())
        names.append(name)
    return names


def _write_tar(frame: pd.DataFrame, exported: pd.DataFrame, out: str) -> None:
    with storage.open_write(out) as fh, tarfile.open(fileobj=fh, mode="w") as tar:
        for source, target in zip(frame["uri"], exported["uri"]):
            _add(tar, target, _image_bytes(source))
        table = io.BytesIO()
        exported.to_parquet(table, index=False)
        _add(tar, "manifest.parquet", table.getvalue())
        _add(tar, "manifest.csv", exported.to_csv(index=False).encode())


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _image_bytes(uri: str) -> bytes:
    """The bytes of a listed image; a file whose leading bytes name no image format is refused after reading only those."""
    try:
        return storage.read_bytes(uri, check=check_signature)
    except ImageLoadError as exc:
        raise _naming(uri, exc) from None


def _crop(uri: str, size: int) -> np.ndarray:
    data = _image_bytes(uri)
    try:
        return centre_crop(decode_image(data, keep_bytes=False).image, size)
    except ImageLoadError as exc:
        raise _naming(uri, exc) from None


def _naming(uri: str, exc: ImageLoadError) -> ImageLoadError:
    """`exc` naming which of the listed images it was."""
    return ImageLoadError(f"{uri}: {exc}; drop its row to export the rest")


def _crop_pack(uris: pd.Series, size: int) -> np.ndarray:
    images = np.empty((len(uris), size, size, 3), dtype=np.uint8)
    for position, uri in enumerate(uris):
        images[position] = _crop(uri, size)
    return images


def _stream_npy(uris: pd.Series, size: int, out: str) -> None:
    """The crops as one `.npy` array, written crop by crop (never the whole array in memory)."""
    with storage.open_write(out) as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "|u1", "fortran_order": False, "shape": (len(uris), size, size, 3)})
        for uri in uris:
            fh.write(_crop(uri, size).tobytes())


def _write_safetensors(images: np.ndarray, labels: np.ndarray, out: str) -> None:
    from safetensors.numpy import save

    storage.write_bytes(out, save({"images": images, "labels": labels}, metadata={"layout": "NHWC uint8 RGB"}))


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()
