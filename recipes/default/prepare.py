"""Build the default detector's training set from ../shared/data, shortcuts neutralized.

Every image of both classes goes through the same deterministic pipeline before anything
else sees it: bottom 6% cropped (the StyleGAN2 watermark strip), then JPEG quality 75 (the
faces' fakes are JPEG q75 while their reals are PNG). Aligned fakes are made from the
neutralized reals with the taef2 autoencoder (FLUX.2's tiny VAE) and neutralized the same
way. Splits are by source image: a real photo and its reconstruction share a split, and the
faces' `data_crossval` (other identities) is the test set.

    python recipes/default/prepare.py --shared ../shared/data --out data/default          # step 1, CPU
    python recipes/default/prepare.py --out data/default --taef2 ../shared/data/generators/taef2 --device cuda  # step 2
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import pandas as pd
from PIL import Image

from fakescope.io.image import load_image
from fakescope.train.augment import AugmentConfig

NEUTRAL = AugmentConfig()  # bottom_crop=0.06, base_jpeg_quality=75
SPLIT_RATIOS = (("train", 0.7), ("val", 0.1), ("test", 0.2))
RENDER_ROOT = "fake-text2image-2022"
SHARED_FOLDERS = ("faces-ffhq128-vs-stylegan2", "real-lfw", "real-imagenet-sample", RENDER_ROOT)


def hash_split(key: str) -> str:
    """A stable split from a source-image key, independent of the order of files."""
    u = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    acc = 0.0
    for name, ratio in SPLIT_RATIOS:
        acc += ratio
        if u <= acc:
            return name
    return SPLIT_RATIOS[-1][0]


def collect(shared: Path, faces_fraction: float = 1.0) -> list[dict]:
    """One row per source image: where it is, its label, source, generator, pair and split.

    `faces_fraction` keeps that share of each faces folder (the first files by name).
    Exits with one line naming the folders `shared` lacks.
    """
    missing = [name for name in SHARED_FOLDERS if not (shared / name).is_dir()]
    if missing:
        raise SystemExit(f"error: {shared} lacks {', '.join(missing)}; pass the ../shared/data folder")
    faces = shared / "faces-ffhq128-vs-stylegan2"
    rows = []
    for folder, split_of in (("data", None), ("data_crossval", "test")):
        for label, sub in (("real", "real"), ("ai", "fake")):
            files = sorted((faces / folder / sub).iterdir())
            for p in files[: round(len(files) * faces_fraction)]:
                key = f"faces/{folder}/{p.stem}"
                split = split_of or ("val" if hash_split(key) == "val" else "train")
                rows.append(dict(path=p, label=label, source="ffhq" if label == "real" else "thispersondoesnotexist",
                                 generator=None if label == "real" else "stylegan2", pair_id=key, split=split))
    for source, folder in (("lfw", "real-lfw"), ("imagenet", "real-imagenet-sample")):
        for p in sorted((shared / folder).iterdir()):
            key = f"{source}/{p.stem}"
            rows.append(dict(path=p, label="real", source=source, generator=None, pair_id=key, split=hash_split(key)))
    for gen_dir in sorted((shared / RENDER_ROOT).iterdir()):
        for p in sorted(gen_dir.iterdir()):
            key = f"{gen_dir.name}/{p.stem}"
            rows.append(dict(path=p, label="ai", source=RENDER_ROOT, generator=gen_dir.name, pair_id=key, split=hash_split(key)))
    return rows


def attributes(shared: Path) -> pd.DataFrame:
    table = pd.read_csv(shared / "faces-ffhq128-vs-stylegan2" / "ffhq_attributes.csv")
    table["ffhq_id"] = table.pop("ffhq_file").str.replace(".png", "", regex=False)
    return table


def save_neutralized(image: Image.Image, dest: Path) -> None:
    """Crop the bottom strip and store the base-quality JPEG bytes themselves (no extra encoding)."""
    keep = max(1, round(image.height * (1.0 - NEUTRAL.bottom_crop)))
    dest.parent.mkdir(parents=True, exist_ok=True)
    image.crop((0, 0, image.width, keep)).save(dest, "JPEG", quality=NEUTRAL.base_jpeg_quality)


def step_neutralize(shared: Path, out: Path, faces_fraction: float = 1.0) -> pd.DataFrame:
    """Write every source image neutralized under `out/` and return the manifest rows."""
    records = []
    for row in collect(shared, faces_fraction):
        image = load_image(row.pop("path")).image
        rel = Path(row["label"]) / (row["pair_id"] + ".jpg")
        save_neutralized(image, out / rel)
        records.append({**row, "uri": str(rel)})
    manifest = pd.DataFrame(records)
    manifest["ffhq_id"] = manifest["pair_id"].str.extract(r"faces/data_crossval/(\d+)$")[0]
    return manifest.merge(attributes(shared), on="ffhq_id", how="left").drop(columns="ffhq_id")


def step_reconstruct(out: Path, manifest: pd.DataFrame, weights: Path, device: str, scales: tuple[float, ...]) -> pd.DataFrame:
    """Aligned pairs: each neutralized real through taef2, at each scale, neutralized again.

    At scales other than 1 the down-scaled real is kept too (as a real of its own source),
    so that real and reconstruction differ only by the autoencoder's trace, never by scale.
    """
    from fakescope.generate.taef2 import TAEF2

    model = TAEF2.from_dir(weights, device=device)
    reals = manifest[manifest["label"] == "real"]
    records = []
    for scale in scales:
        tag = f"x{scale:g}"
        for _, row in reals.iterrows():
            image = Image.open(out / row["uri"]).convert("RGB")
            if scale != 1.0:
                image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
            if min(image.size) < 64:
                continue
            if scale != 1.0:
                rel = Path("real") / tag / (row["pair_id"] + ".jpg")
                _save_jpeg(image, out / rel)
                records.append({**row.to_dict(), "uri": str(rel), "source": f"{row['source']}-{tag}"})
            rel = Path("ai") / f"taef2-{tag}" / (row["pair_id"] + ".jpg")
            _save_jpeg(model.reconstruct([image])[0], out / rel)
            records.append({**row.to_dict(), "uri": str(rel), "label": "ai", "source": f"taef2-{row['source']}-{tag}",
                            "generator": "taef2"})
    return pd.concat([manifest, pd.DataFrame(records)], ignore_index=True)


def _save_jpeg(image: Image.Image, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    image.save(dest, "JPEG", quality=NEUTRAL.base_jpeg_quality)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shared", type=Path, help="../shared/data: run step 1 (neutralize)")
    parser.add_argument("--taef2", type=Path, help="taef2 weights folder: run step 2 (aligned reconstructions)")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.5])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--faces-fraction", type=float, default=1.0, help="share of the faces set to use")
    args = parser.parse_args()
    path = args.out / "manifest.csv"
    if not args.shared and not args.taef2:
        parser.error("nothing to do: give --shared (step 1), --taef2 (step 2) or both")
    if args.taef2 and not args.shared and not path.is_file():
        parser.error(f"{path} does not exist: run step 1 (--shared) first")
    if args.shared:
        manifest = step_neutralize(args.shared, args.out, args.faces_fraction)
        manifest.to_csv(path, index=False)
        print(f"step 1: {len(manifest)} images neutralized into {args.out}")
    if args.taef2:
        manifest = step_reconstruct(args.out, pd.read_csv(path), args.taef2, args.device, tuple(args.scales))
        manifest.to_csv(path, index=False)
        print(f"step 2: {int((manifest['generator'] == 'taef2').sum())} taef2 reconstructions, {len(manifest)} rows")


if __name__ == "__main__":
    main()
