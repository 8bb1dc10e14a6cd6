"""Leave-one-generator-out: how a training recipe does on a generator it never saw.

For each held-out generator, one model is trained on everything else and scored on every
generator against the test reals, which fills a matrix: rows are the generator left out of
training, columns the generator tested. The diagonal is the unseen-generator result that
matters; the rest shows what the run still does on generators it saw.

Each unseen generator is also scored against every real source alone (`auc_real_<source>`), so
a content mismatch cannot pass for generalisation: a face generator is judged against real faces
as well as against all real photos. The images behind each unseen AUC (the held-out images and the
test reals) are audited for shortcuts as `evaluate` audits its rows (`shortcuts`), so a format or a
watermark that alone separates them is not read as transfer.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
from PIL import Image

from fakescope.data.audit import Inspections
from fakescope.data.manifest import check_rows, read_rows
from fakescope.detector import Detector, resolve_device
from fakescope.errors import ConfigError, UnscorableImages
from fakescope.evaluate.evaluator import make_scorer
from fakescope.evaluate.metrics import binary_metrics, bootstrap_ci
from fakescope.evaluate.shortcuts import audit_rows, shortcut_sample
from fakescope.io import storage
from fakescope.models.bundle import LoadedModel, load_model
from fakescope.train.augment import AugmentConfig, recipe_preprocessing
from fakescope.train.config import TrainConfig
from fakescope.train.dataset import LABELS, neutralized, warn_unreadable
from fakescope.train.trainer import check_out, recipe, train

AUC_PREFIX = "auc_vs_"
COUNT_PREFIX = "n_vs_"
REAL_SOURCE_PREFIX = "auc_real_"
GROUPINGS = ("generator", "source")
KEEP_BYTES = 512 * 1024**2
"""Decoded, preprocessed test images (width x height x bands bytes each) that every fold's scoring reuses; the
images past it are read and preprocessed again for each fold. Held while every fold trains, so kept small: reading
all of them again costs about a second per fold for 627 test images, a fold's training minutes."""


def leave_one_generator_out(
    cfg: TrainConfig,
    generators: list[str] | None = None,
    manifest: pd.DataFrame | None = None,
    *,
    by: str = "generator",
    progress: bool = False,
    audit: bool = True,
) -> pd.DataFrame:
    """Train once per generator with its images removed, then score every generator against the test reals.

    Args:
        cfg: the training recipe; each run writes to `cfg.out/without-<generator>` (the name %-quoted), a folder that already
            holds a run being refused unless `cfg.resume` continues it or `cfg.overwrite` replaces it.
        generators: the generators to hold out, one run each (default: every ai generator).
        manifest: rows to use instead of reading `cfg.manifest`, checked as its rows would be (`check_rows`).
        by: `generator` (one generator per fold) or `source`, which holds out whole ai sources
            (e.g. every 2022 text-to-image renderer at once, a generator family).
        audit: audit each fold's unseen images and the test reals for shortcuts (`audit_rows`, the pixel model's
            view: no provenance), into the `shortcuts` column (None when off).

    Returns:
        One row per held-out generator: `auc_test` (its test-split images vs test reals),
        `auc_all` and `recall_all` (all its images, none trained on, vs test reals), `auc_all_low` and
        `auc_all_high` (the 95% bootstrap interval of `auc_all`), `n_unseen`, `n_real` (the test reals it is scored
        against), `n_paired_trained` (its images
        made from a real the run trained or validated on, see `paired_with_trained`), `auc_seen_test` (the run's
        own test AUC on the generators it trained on),
        `auc_real_<source>` (all its images vs one real source's test images), and `auc_vs_<g>`
        and `n_vs_<g>` (AUC and image count) for every generator g (all of g's images when g is
        the one held out, its test images otherwise), and `shortcuts` (the audit of the images behind `auc_all`).
        Its AUCs are NaN when none of its images, or no test real, could be read (`no_auc_reason` says which).

    Raises:
        ConfigError: `by` is neither `generator` nor `source`, no ai image names a generator, a requested one has
            no ai images in the manifest, the test split has no reals, or a fold's folder holds a run.

    Example:
        >>> table = leave_one_generator_out(TrainConfig.from_yaml("train.yaml"), ["stylegan2"])  # doctest: +SKIP
        >>> generalization_matrix(table)  # doctest: +SKIP
    """
    if by not in GROUPINGS:  # another column (`uri`, say) would train one model per value, unasked
        raise ConfigError(f"cannot hold out by {by!r}: use generator (one generator per fold) or source (one ai source, "
                          "a family, per fold)")
    rows = check_rows(manifest) if manifest is not None else read_rows(cfg.manifest)
    present = sorted(rows.loc[rows["label"] == "ai", by].dropna().unique())
    if not present:  # else no fold, and an empty table
        raise ConfigError(f"no ai image of the manifest names its {by} (column {by!r}): there is none to hold out")
    gens = generators or present
    missing = sorted(set(gens) - set(present))
    if missing:
        raise ConfigError(f"no ai images with {by} {', '.join(missing)}; present: {', '.join(present)}")
    if not ((rows["split"] == "test") & (rows["label"] == "real")).any():  # else found only after the first fold trains
        raise ConfigError("the manifest's 'test' split has no real images, against which every held-out generator is scored")
    _check_folds(rows, by, gens)
    runs = {gen: replace(cfg, out=str(fold_folder(cfg.out, gen)), name=f"{cfg.name}-without-{gen}") for gen in gens}
    for run_cfg in runs.values():  # before any fold trains: a later fold's refusal would waste the earlier ones
        check_out(run_cfg)
    results, test = [], ReadOnce(rows.loc[rows["split"] == "test", "uri"])  # every fold scores the test images
    test_reals = (rows["label"] == "real") & (rows["split"] == "test")
    held_out = {gen: (rows["label"] == "ai") & (rows[by] == gen) for gen in runs}
    samples = [shortcut_sample(rows[held_out[gen] | test_reals]) if audit else None for gen in runs]  # drawn up front
    wanted = [frozenset(sample.rows["uri"]) if sample else frozenset() for sample in samples]
    found = {}  # inspections a later fold's audit wants of test images, which `test` keeps unread for it
    for k, ((gen, run_cfg), sample) in enumerate(zip(runs.items(), samples)):
        held = held_out[gen]
        saved = train(run_cfg, rows[~held].reset_index(drop=True), progress=progress)
        model = load_model(Path(run_cfg.out) / "model", device=resolve_device(cfg.device))
        later = frozenset().union(*wanted[k + 1:]) & test.keep  # the test reals, and later folds' held test images
        inspections = Inspections(wanted[k] | later, found)  # inspected as scoring reads them
        # test rows plus every held-out image: "all" images of a seen generator are then its test images
        scored = score_unseen(model, rows[held | (rows["split"] == "test")], present, cfg, by=by, intervals=[gen],
                              images=test, inspections=inspections).set_index("held_out")  # the others' AUCs only
        row = {"held_out": gen, **scored.loc[gen].to_dict()}
        row["n_unseen"], row["n_real"] = int(row["n_unseen"]), int(row["n_real"])
        row["n_paired_trained"] = paired_with_trained(rows, held)
        row["auc_seen_test"] = saved.metrics.get("test", {}).get("overall", {}).get("auc", float("nan"))
        row["shortcuts"] = audit_rows(sample, run_cfg.augment, provenance=False, progress=progress,
                                      inspections=inspections) if sample else None  # reads none
        found = {uri: info for uri, info in found.items() if uri in later}  # this fold's own are done with
        row.update({AUC_PREFIX + g: scored.loc[g, "auc_all"] for g in present})
        row.update({COUNT_PREFIX + g: int(scored.loc[g, "n_unseen"]) for g in present})
        results.append(row)
    return pd.DataFrame(results)


def no_auc_reason(run: dict) -> str | None:
    """Why a `leave_one_generator_out` row has no unseen AUC (NaN), or None when it has one."""
    if run["n_unseen"] == 0:
        return "none of its images could be read (each named in a warning)"
    if np.isnan(run["auc_all"]):
        return "no real of the test split could be read"
    return None


def paired_with_trained(rows: pd.DataFrame, held: pd.Series) -> int:
    """How many `held` ai images share a `pair_id` with a real of the train or val split, which a fold keeps: made
    from an image the run learned as real, they are not unseen in content (`auc_test`, the test split, which pairs
    share, leaves them out)."""
    if "pair_id" not in rows:
        return 0
    pair = rows["pair_id"].fillna("").astype(str)
    trained = pair[(rows["label"] == "real") & rows["split"].isin(["train", "val"]) & (pair != "")]
    return int((held & pair.isin(set(trained))).sum())


def fold_folder(out: str | Path, generator: object) -> Path:
    """The run folder of the fold that holds `generator` out: `out/without-<generator>`, the name %-quoted (a '/' in it
    would nest folders)."""
    return Path(out) / f"without-{quote(str(generator), safe='')}"


def generalization_matrix(results: pd.DataFrame) -> pd.DataFrame:
    """The AUC matrix of a `leave_one_generator_out` table: index = held out of training, columns = tested."""
    return _prefixed_table(results, AUC_PREFIX, "tested")


def count_matrix(results: pd.DataFrame) -> pd.DataFrame:
    """The ai images behind each cell of `generalization_matrix` (few test images make a cell noisy)."""
    return _prefixed_table(results, COUNT_PREFIX, "tested")


def save_generalization(results: pd.DataFrame, folder: str | Path, cfg: TrainConfig | None = None) -> dict[str, str]:
    """Write `logo.csv` (one row per run) and `logo.json` (runs, matrix, its counts and the recipe as `recipe` records it)
    into a local folder; both are made in full first, each written to a temporary file renamed into place, so an
    interrupt leaves the earlier ones whole."""
    folder = Path(folder)
    paths = {"csv": str(folder / "logo.csv"), "json": str(folder / "logo.json")}
    table = _flat(results).to_csv(index=False)
    payload = {
        "recipe": recipe(cfg).to_dict() if cfg else None,
        "runs": json.loads(results.to_json(orient="records")),
        "matrix": json.loads(generalization_matrix(results).to_json(orient="index")),
        "counts": json.loads(count_matrix(results).to_json(orient="index")),
        "by_real_source": json.loads(real_source_table(results).to_json(orient="index")),
    }
    document = json.dumps(payload, indent=2)
    storage.write_bytes(paths["csv"], table.encode())
    storage.write_bytes(paths["json"], document.encode())
    return paths


def score_unseen(
    model: LoadedModel, rows: pd.DataFrame, generators: list[str], cfg: TrainConfig, *, by: str = "generator",
    intervals: list[str] | None = None, images: ReadOnce | None = None, inspections: Inspections | None = None,
) -> pd.DataFrame:
    """For each generator a model never saw: AUC of all its images (with a 95% bootstrap interval, 1000 resamples),
    and of its test-split images, vs the test reals.

    `by` names the column that identifies a generator (`generator`, or `source` for whole families). `intervals`
    names the generators whose interval is wanted (default: all; the others' bounds are NaN): each costs 1000 AUCs.
    `images` keeps the preprocessed images it is asked to keep for the next call (default: each read afresh).
    `inspections` takes the shortcut audit's inspections of the images it wants as they are read (`readable`).

    Returns:
        One row per generator: `held_out`, `n_unseen`, `n_real` (the test reals read), `auc_all`, `auc_all_low`,
        `auc_all_high`, `auc_test`,
        `recall_all`, and `auc_real_<source>` for each real source of the test split (all its images vs that source).
    """
    test_reals = rows[(rows["label"] == "real") & (rows["split"] == "test")]
    unseen = rows[(rows["label"] == "ai") & rows[by].isin(generators)]
    scored = pd.concat([test_reals, unseen], ignore_index=True)
    probs = _probabilities(model, scored, cfg.batch_size, images, inspections)
    scored, probs = scored[~np.isnan(probs)].reset_index(drop=True), probs[~np.isnan(probs)]  # unreadable: left out
    labels = scored["label"].map(LABELS).to_numpy()
    threshold = model.config.threshold
    sources = scored["source"].where(labels == 0).dropna().unique() if "source" in scored else []
    out = []
    for gen in generators:
        fake = (labels == 1) & (scored[by] == gen).to_numpy()
        mask = (labels == 0) | fake
        in_test = mask & (scored["split"] == "test").to_numpy()
        every = binary_metrics(labels[mask], probs[mask], threshold)
        wanted = intervals is None or gen in intervals
        low, high = bootstrap_ci(labels[mask], probs[mask], "auc", threshold) if wanted else (float("nan"),) * 2
        row = {
            "held_out": gen,
            "n_unseen": int(fake.sum()),
            "n_real": int((labels == 0).sum()),
            "auc_all": every["auc"],
            "auc_all_low": low,
            "auc_all_high": high,
            "auc_test": binary_metrics(labels[in_test], probs[in_test], threshold)["auc"],
            "recall_all": every["recall"],
        }
        for source in sorted(sources):
            pair = fake | ((labels == 0) & (scored["source"] == source).to_numpy())
            row[REAL_SOURCE_PREFIX + str(source)] = binary_metrics(labels[pair], probs[pair], threshold)["auc"]
        out.append(row)
    return pd.DataFrame(out)


def real_source_table(results: pd.DataFrame) -> pd.DataFrame:
    """AUC of each held-out generator (rows) against each real source's test images alone (columns)."""
    return _prefixed_table(results, REAL_SOURCE_PREFIX, "real source")


def _check_folds(rows: pd.DataFrame, by: str, gens: list[str]) -> None:
    """Refuse, before any training, a fold whose train or val split would be left with one label."""
    for gen in gens:
        kept = rows[~((rows["label"] == "ai") & (rows[by] == gen))]
        for split in ("train", "val"):
            if kept.loc[kept["split"] == split, "label"].nunique() < 2:
                raise ConfigError(f"holding out {by} {gen!r} leaves the {split!r} split with one label, "
                                  "so that fold cannot be trained")


def _flat(results: pd.DataFrame) -> pd.DataFrame:
    """The table for logo.csv: each fold's `shortcuts` audit as the names it flags (`shortcuts_flagged`, `;`-separated,
    empty for none); no such column when no fold was audited."""
    if "shortcuts" not in results:
        return results
    audited = results["shortcuts"].notna().any()
    flagged = results["shortcuts"].map(lambda s: "; ".join(s["flagged"]) if s else "")
    return results.drop(columns="shortcuts").assign(**({"shortcuts_flagged": flagged} if audited else {}))


def _prefixed_table(results: pd.DataFrame, prefix: str, columns_name: str) -> pd.DataFrame:
    """The `prefix`ed columns of a results table, indexed by `held_out`, with the prefix dropped."""
    columns = [c for c in results.columns if c.startswith(prefix)]
    table = results.set_index("held_out")[columns]
    table.columns = [c.removeprefix(prefix) for c in columns]
    table.index.name, table.columns.name = "held_out", columns_name
    return table


def _probabilities(model: LoadedModel, rows: pd.DataFrame, batch_size: int, images: ReadOnce | None = None,
                   inspections: Inspections | None = None, chunk: int = 256) -> np.ndarray:
    """Calibrated P(ai) per row, preprocessed by the model's own recipe, reading `chunk` images at a time (or taking
    them from `images`); NaN where the image is unreadable (named in a warning, as training does)."""
    detector = Detector(model, device=next(model.network.parameters()).device, batch_size=batch_size, provenance=False)
    score, prepared = make_scorer(detector, None), images or ReadOnce(())
    preprocessing = recipe_preprocessing(model.config)
    uris, probs = rows["uri"].tolist(), np.full(len(rows), np.nan)
    for start in range(0, len(uris), chunk):
        ready = prepared.images(uris[start:start + chunk], preprocessing, inspections)
        read = [i for i, image in enumerate(ready) if image is not None]
        if read:
            try:
                probs[start + np.array(read)] = score([ready[i] for i in read])
            except UnscorableImages as exc:  # too long and thin to upscale to a tile: left out, as unreadable ones
                probs[start + np.array(read)] = exc.scores
                for j, reason in exc.reasons.items():
                    warn_unreadable(uris[start + read[j]], reason)
    return probs


@dataclass
class ReadOnce:
    """Images decoded and preprocessed once and handed out again: those of `keep` (uris), up to `limit` bytes of
    pixels (`KEEP_BYTES`); any other is read afresh each time, as is every one after a change of preprocessing."""

    keep: Collection[str]
    limit: int = KEEP_BYTES
    used: int = 0
    kept: dict[str, Image.Image | None] = field(default_factory=dict)
    preprocessing: AugmentConfig | None = None

    def __post_init__(self) -> None:
        self.keep = frozenset(map(str, self.keep))

    def images(self, uris: list[str], preprocessing: AugmentConfig | None, inspections: Inspections | None = None
               ) -> list[Image.Image | None]:
        """Each uri's image through `preprocessing` (`neutralized`), None where it cannot be read or re-encoded (with a
        warning); `inspections` inspects those it wants as they are read (`readable`)."""
        if preprocessing != self.preprocessing:
            self.kept, self.used, self.preprocessing = {}, 0, preprocessing
        out = []
        for uri in map(str, uris):
            if uri in self.kept:
                out.append(self.kept[uri])
                continue
            image = neutralized(uri, preprocessing, inspections)
            size = image.width * image.height * len(image.getbands()) if image is not None else 0
            if uri in self.keep and self.used + size <= self.limit:
                self.kept[uri], self.used = image, self.used + size
            out.append(image)
        return out
