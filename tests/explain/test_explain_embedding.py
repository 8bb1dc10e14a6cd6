"""Penultimate features, k-means purity and the UMAP pictures, on the planted-artefact set."""

from __future__ import annotations

import io
import os

import numpy as np
import pandas as pd
import pytest
import torch
from explain_helpers import plant, smooth_field
from PIL import Image

from fakescope.errors import ConfigError
from fakescope.explain import (
    cluster_purity,
    embed_images,
    mosaic_png,
    project_umap,
    report_figures,
    scatter_png,
)
from fakescope.explain.embedding import drawn_categories, named_values
from fakescope.explain.report import embedding_report


@pytest.fixture(scope="module")
def val_rows(planted_manifest: pd.DataFrame) -> pd.DataFrame:
    """24 held-out images (12 per label) plus one unreadable file."""
    rows = planted_manifest[planted_manifest["split"] == "val"]
    broken = {**rows.iloc[0].to_dict(), "uri": rows.iloc[0]["uri"] + ".missing.png"}
    return pd.concat([rows, pd.DataFrame([broken])], ignore_index=True)


@pytest.fixture(scope="module")
def easy_table(planted_model, tmp_path_factory) -> pd.DataFrame:
    """An easy set: 15 plain fields and 15 with the artefact repeated all over (16 copies)."""
    root = tmp_path_factory.mktemp("easy")
    rows = []
    for i in range(15):
        for label in ("real", "ai"):
            pixels = smooth_field(9000 + 2 * i + (label == "ai"), 64)
            if label == "ai":
                for top in range(4, 64, 16):
                    for left in range(4, 64, 16):
                        plant(pixels, top, left)
            Image.fromarray(pixels).save(root / f"{label}{i}.png")
            rows.append({"uri": str(root / f"{label}{i}.png"), "label": label})
    return embed_images(planted_model, pd.DataFrame(rows))


@pytest.fixture(scope="module")
def val_table(planted_model, val_rows) -> pd.DataFrame:
    return embed_images(planted_model, val_rows, batch_size=8)


def test_embeddings_are_one_vector_per_readable_image(val_table, val_rows, planted_model):
    assert len(val_table) == len(val_rows)
    assert val_table["uri"].tolist() == val_rows["uri"].tolist()
    ok = val_table["error"].isna()
    assert ok.sum() == 24 and "no such file" in val_table["error"][~ok].iloc[0]
    features = np.stack(val_table.loc[ok, "embedding"].tolist())
    assert features.shape == (24, planted_model.network.backbone.num_features) and features.dtype == np.float32
    probs = val_table.loc[ok, "probability"].to_numpy()
    labels = (val_table.loc[ok, "label"] == "ai").to_numpy()
    assert probs[labels].min() > probs[~labels].max()  # the model separates the held-out images


def test_embeddings_match_the_model_pooled_features(val_table, planted_model):
    from fakescope.models.tiling import make_tiles, normalize
    from fakescope.train.dataset import read_source

    row = val_table.iloc[3]
    tiles = torch.from_numpy(normalize(make_tiles(read_source(row["uri"]), planted_model.config.input).pixels,
                                   planted_model.config.input))
    expected = planted_model.network.embed(tiles).mean(0).detach().numpy()
    np.testing.assert_allclose(row["embedding"], expected, rtol=1e-4, atol=1e-5)


def test_kmeans_clusters_of_an_easy_set_are_pure_and_seeded(easy_table):
    features = np.stack(easy_table["embedding"].tolist())
    found = cluster_purity(features, easy_table["label"], 2, seed=0)
    assert found.purity == 1.0
    assert sorted(found.table["size"]) == [15, 15] and sorted(found.table["majority"]) == ["ai", "real"]
    again = cluster_purity(features, easy_table["label"], 2, seed=0)
    np.testing.assert_array_equal(found.assignments, again.assignments)


def test_purity_counts_majorities():
    features = np.array([[0.0], [0.1], [0.2], [10.0], [10.1], [10.2]])
    found = cluster_purity(features, pd.Series(["ai", "ai", "real", "real", "real", "real"]), 2)
    assert found.purity == pytest.approx(5 / 6)
    assert sorted(found.table["purity"].round(3)) == [0.667, 1.0]


def test_kmeans_refuses_more_clusters_than_images():
    with pytest.raises(ConfigError, match="k-means with k=4 clusters needs at least 4 images, got 3"):
        cluster_purity(np.zeros((3, 2)), pd.Series(["ai", "real", "ai"]), 4)  # was sklearn's ValueError


def test_embedding_report_with_too_few_readable_images_names_one_unreadable(planted_model, val_rows, tmp_path):
    rows = val_rows.iloc[[0, 1, 12, 13, 24]]  # four images and the missing file
    with pytest.raises(ConfigError, match=r"at least 5 readable images, got 4 of 5; first unreadable: .*missing\.png: no such"):
        embedding_report(planted_model, rows, str(tmp_path))
    assert not list(tmp_path.iterdir())


def test_a_column_of_many_values_draws_the_most_frequent_and_one_other():
    values = pd.Series([f"person{i}" for i in range(500)] + ["common"] * 30 + ["usual"] * 20, name="person")
    drawn = drawn_categories(values)  # one scatter call and legend entry per value: 10k ids took 5 minutes
    assert drawn.nunique() == 19 and drawn.value_counts()["(other: 484 values)"] == 484
    assert {"common", "usual", "person0", "person111"} <= set(drawn)  # ties by name
    assert not {"person112", "person2"} & set(drawn)
    assert drawn_categories(values[:20]).equals(values[:20])
    coords = np.random.default_rng(0).random((len(values), 2))
    assert Image.open(io.BytesIO(scatter_png(coords, values, "many"))).size == (700, 600)


def test_a_numeric_column_draws_its_missing_values_grey():
    from fakescope.explain.embedding import MISSING_COLOUR

    coords = np.random.default_rng(0).random((40, 2))
    values = pd.Series([np.nan] * 20 + list(np.arange(20.0)), name="age")  # e.g. an attribute only real images have
    pixels = np.asarray(Image.open(io.BytesIO(scatter_png(coords, values, "age"))).convert("RGB")).reshape(-1, 3)
    grey = np.all(pixels == [round(255 * c) for c in MISSING_COLOUR], axis=1).sum()
    assert grey > 150  # the 20 images without an age are drawn (about 15 pixels each), not transparent


def test_a_value_beside_missing_ones_is_one_value_as_evaluate_counts_it():
    """`1` beside `No face detected` or empty cells made a scatter of one colour and (none), which evaluate does not slice."""
    assert named_values(pd.Series([1.0, np.nan, 1.0])) == ["1"]
    assert named_values(pd.Series(["1", "No face detected", ""])) == ["1"]
    assert named_values(pd.Series(["", None, "No face detected"])) == []
    assert named_values(pd.Series([0.0, 1.0, np.nan])) == ["0", "1"]


def test_categories_print_whole_numbers_as_integers_and_missing_values_grey():
    """A 0/1 column with gaps (read as floats) showed '0.0' and '1.0', and its '(none)' in tab10 blue."""
    from fakescope.explain.embedding import MISSING_COLOUR

    values = pd.Series([0.0, 1.0, np.nan, 1.0] * 10, name="glasses")
    assert drawn_categories(values).tolist()[:4] == ["0", "1", "(none)", "1"]
    coords = np.random.default_rng(0).random((40, 2))
    pixels = np.asarray(Image.open(io.BytesIO(scatter_png(coords, values, "glasses"))).convert("RGB")).reshape(-1, 3)
    assert np.all(pixels == [round(255 * c) for c in MISSING_COLOUR], axis=1).sum() > 100  # the 10 without a value


def test_a_no_face_detected_value_is_drawn_as_missing_as_evaluate_reads_it():
    """ffhq_attributes.csv marks faceless images `No face detected`: the scatter drew it as a category of its own,
    where evaluate, balance and the attribute join read it as missing; it is now the grey `(none)`."""
    coords = np.random.default_rng(0).random((40, 2))

    def drawn(values: list) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(scatter_png(coords, pd.Series(values * 10, name="glasses"), "glasses"))))

    np.testing.assert_array_equal(drawn(["0", "1", "No face detected", "1"]), drawn(["0", "1", None, "1"]))


def test_kmeans_on_identical_features_warns_in_one_line(caplog):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sklearn's ConvergenceWarning printed two lines of its source
        found = cluster_purity(np.zeros((6, 3)), pd.Series(["ai", "real"] * 3), 2)
    assert len(set(found.assignments)) == 1
    assert "k-means found 1 distinct cluster(s) of k=2: many images have identical features" in caplog.text


def test_scatter_and_mosaic_are_pngs():
    coords = np.array([[0.0, 0.0], [1.0, 2.0], [3.0, 1.0]], np.float32)
    scatter = Image.open(io.BytesIO(scatter_png(coords, pd.Series(["ai", "real", "ai"], name="label"), "t")))
    assert scatter.format == "PNG" and scatter.size == (700, 600)
    tiles = [Image.new("RGB", (32, 32), c) for c in ("red", "blue", "yellow")]
    mosaic = Image.open(io.BytesIO(mosaic_png(coords, tiles, np.array([True, False, True]), "m")))
    assert mosaic.format == "PNG" and mosaic.size == (900, 940)


@pytest.mark.slow  # numba compiles UMAP on its first fit: 15-40 s on this machine
def test_the_scatter_legend_hides_no_point():
    from matplotlib import colormaps

    rng = np.random.default_rng(0)
    coords = np.concatenate([rng.random((4000, 2)), np.full((18, 2), 0.5)]).astype(np.float32)
    values = pd.Series(["a"] * 4000 + [f"b{i:02d}" for i in range(18)], name="identity")  # 19 legend entries
    png = np.asarray(Image.open(io.BytesIO(scatter_png(coords, values, "t"))).convert("RGB")).astype(int)
    a = np.abs(png - np.round(np.array(colormaps["tab20"](0)[:3]) * 255)).sum(-1) < 6
    rows, cols = np.nonzero(a)
    (top, bottom), (left, right) = np.percentile(rows, [1, 99]).astype(int), np.percentile(cols, [1, 99]).astype(int)
    middle = (top + bottom) // 2, (left + right) // 2
    quarters = [int(a[r0:r1, c0:c1].sum()) for r0, r1 in ((top, middle[0]), (middle[0], bottom))
                for c0, c1 in ((left, middle[1]), (middle[1], right))]
    assert min(quarters) > 0.85 * max(quarters), quarters  # the legend inside the axes hid a fifth of one quarter


def test_the_mosaic_legend_hides_no_thumbnail():
    blue, grey = Image.new("RGB", (64, 64), (0, 0, 255)), Image.new("RGB", (64, 64), (128, 128, 128))

    def blue_pixels(corner: list[float]) -> int:
        coords = np.array([[0, 0], [1, 1], corner], np.float32)
        png = np.asarray(Image.open(io.BytesIO(mosaic_png(coords, [grey, grey, blue], np.ones(3, bool), "t"))).convert("RGB"))
        return int(((png[..., 2] > 200) & (png[..., 0] < 60) & (png[..., 1] < 60)).sum())

    assert blue_pixels([1, 1]) == blue_pixels([0, 0]) > 0  # top right: 147 of 900 showed beside the legend


def test_umap_is_one_point_per_image_separable_and_seeded(easy_table):
    features = np.stack(easy_table["embedding"].tolist())
    coords = project_umap(features, seed=3)
    assert coords.shape == (30, 2)
    np.testing.assert_array_equal(coords, project_umap(features, seed=3))
    from sklearn.metrics import silhouette_score

    labels = easy_table["label"].to_numpy()
    assert silhouette_score(coords, labels) > 0.5
    centroid_gap = np.linalg.norm(coords[labels == "ai"].mean(0) - coords[labels == "real"].mean(0))
    assert centroid_gap > 3 * max(coords[labels == "ai"].std(0).max(), coords[labels == "real"].std(0).max())


@pytest.mark.slow
def test_umap_of_fewer_images_than_its_neighbours_and_too_few_images():
    features = np.random.default_rng(0).random((5, 8)).astype(np.float32)  # n_neighbors 15 > 5 images
    coords = project_umap(features, seed=0)
    assert coords.shape == (5, 2) and np.isfinite(coords).all()
    with pytest.raises(ConfigError, match="^UMAP needs at least 5 images, got 4$"):
        project_umap(features[:4])


@pytest.mark.slow
def test_umap_of_identical_features_warns_in_one_line_and_stays_seeded(caplog, recwarn):
    """umap's failed spectral start printed five lines advising to add jitter to the data."""
    features = np.ones((5, 8), np.float32)  # five copies of one image, or a model whose features collapsed
    coords = project_umap(features, seed=0)
    assert caplog.messages == ["UMAP's spectral start failed (many images have near-identical features); it started "
                               "from seeded random positions instead"]
    assert [str(w.message) for w in recwarn] == []
    np.testing.assert_array_equal(coords, project_umap(features, seed=0))


@pytest.mark.slow
def test_embedding_report_writes_parquet_plots_and_clusters(planted_model, val_rows, tmp_path):
    report = embedding_report(planted_model, val_rows, str(tmp_path), color_by=("label", "pattern", "generator"), seed=0)
    table = pd.read_parquet(tmp_path / "embeddings.parquet")
    assert len(table) == 25 and table["umap_x"].notna().sum() == 24
    assert set(table["cluster"].dropna()) == {0, 1} and report.clusters.purity >= 0.7
    assert pd.read_csv(tmp_path / "clusters.csv")["size"].sum() == 24
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    assert names == ["umap_label.png", "umap_mosaic.png", "umap_pattern.png"]  # generator: checker beside none, one value
    assert [title for title, _ in report.figures][-1].startswith("UMAP thumbnail mosaic")


@pytest.mark.slow
def test_a_manifest_of_face_attributes_is_drawn_by_each_and_the_seed_fixes_every_number(planted_model, val_rows, tmp_path):
    """The original project's attribute columns (glasses 1.0/0.0 or empty) colour their own scatters; one seed gives
    the same coordinates, clusters and drawn pixels twice, another seed other coordinates."""
    rows = val_rows[val_rows["uri"].map(os.path.exists)].reset_index(drop=True)
    n = len(rows)
    rows = rows.assign(expression=[("happy", "neutral", "sad")[i % 3] for i in range(n)],
                       glasses=[(1.0, 0.0, np.nan)[i % 3] for i in range(n)],
                       gender=[("Male", "Female")[i % 2] for i in range(n)],
                       race=[("asian", "black", "white")[i % 3] for i in range(n)])
    attributes = ("expression", "glasses", "gender", "race")

    def report(seed: int, folder: str):
        done = embedding_report(planted_model, rows, str(tmp_path / folder), color_by=attributes, seed=seed, max_thumbnails=8)
        pixels = {p.name: np.asarray(Image.open(p)) for p in sorted((tmp_path / folder).glob("*.png"))}
        return done.table[["umap_x", "umap_y", "cluster"]].to_numpy(float), pixels

    (coords, pixels), (again, same) = report(0, "a"), report(0, "b")
    assert sorted(pixels) == ["umap_expression.png", "umap_gender.png", "umap_glasses.png", "umap_label.png",
                              "umap_mosaic.png", "umap_race.png"]
    np.testing.assert_array_equal(coords, again)
    for name in pixels:
        np.testing.assert_array_equal(pixels[name], same[name], err_msg=name)
    assert not np.array_equal(coords[:, :2], report(1, "c")[0][:, :2])
    assert list(drawn_categories(rows["glasses"]).unique()) == ["1", "0", "(none)"]


@pytest.mark.slow
def test_a_set_of_one_label_warns_that_its_purity_says_nothing(planted_model, val_rows, tmp_path, caplog):
    report = embedding_report(planted_model, val_rows[val_rows["label"] == "real"].head(6), str(tmp_path),
                              color_by=("label",))
    assert report.clusters.purity == 1.0
    assert "every embedded image is labelled 'real': label purity is 1 whatever the features hold" in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize("runtime", [None, "onnx"])
def test_report_figures_lists_existing_pngs(planted_model, val_rows, tmp_path, runtime):
    from fakescope.detector import Detector

    if runtime:
        pytest.importorskip("onnxruntime")
    model = Detector(planted_model, runtime=runtime) if runtime else planted_model  # onnx: its torch network explains
    figures = report_figures(model, val_rows, tmp_path / "figures", examples=2)
    titles = [t for t, _ in figures]
    # no generator scatter: only the ai rows name one (checker), one value beside missing ones, as evaluate counts it
    assert titles[:2] == ["UMAP by label", "UMAP thumbnail mosaic (green: correct, red: wrong)"]
    assert len(figures) == 4 and sum(t.startswith("Grad-CAM") for t in titles) == 2
    for _, path in figures:
        assert path.is_file() and Image.open(path).format == "PNG"


@pytest.mark.slow
def test_report_figures_of_rows_with_only_uri_and_label(planted_model, val_rows, tmp_path):
    rows = val_rows[["uri", "label"]].assign(label=val_rows["label"].replace({"ai": "fake"}))
    figures = report_figures(planted_model, rows, tmp_path, examples=4)  # were none: 'no column(s) generator to colour by'
    assert [t.split(":")[0].split(",")[0] for t, _ in figures] == ["UMAP by label", "UMAP thumbnail mosaic (green",
                                                                   "Grad-CAM", "Grad-CAM", "Grad-CAM", "Grad-CAM"]
    assert [t.split(": ")[1].split(" image")[0] for t, _ in figures[2:]] == ["ai", "ai", "ai", "real"]  # `fake` read as ai
    assert all(", source (none), " in t for t, _ in figures[2:])
    assert sorted(pd.read_parquet(tmp_path / "embeddings.parquet")["label"].unique()) == ["ai", "real"]


@pytest.mark.slow
def test_report_figures_show_the_most_confident_mistakes_beside_the_top_hits(planted_model, val_rows, tmp_path):
    """Only the top-scored ai and real images had Grad-CAM figures: the misses, what a researcher learns most from,
    had none. One planted image labelled real and one plain field labelled ai must be shown, as mistakes."""
    rows = val_rows.assign(source=np.where(val_rows["label"] == "ai", "gen-a", "camera"))
    swapped = [rows.index[rows["label"] == "ai"][0], rows.index[rows["label"] == "real"][0]]
    rows.loc[swapped, "label"] = ["real", "ai"]
    titles = [t for t, _ in report_figures(planted_model, rows, tmp_path, examples=4) if t.startswith("Grad-CAM")]
    assert len(titles) == 4  # as many as before
    table = pd.read_parquet(tmp_path / "embeddings.parquet").dropna(subset=["probability"])
    ranked = table.sort_values("probability", ascending=False, kind="stable")  # ties (P(ai) 1.000) in manifest order
    ai, real = ranked[ranked["label"] == "ai"], ranked[ranked["label"] == "real"]
    expected = [("top-scored ai", "hit", ai.iloc[0]), ("top-scored ai", "hit", ai.iloc[1]),
                ("lowest-scored ai", "missed", ai.iloc[-1]), ("top-scored real", "false alarm", real.iloc[0])]
    assert ai.iloc[-1]["uri"] == rows.loc[swapped[1], "uri"] and real.iloc[0]["uri"] == rows.loc[swapped[0], "uri"]
    for title, (group, verdict, row) in zip(titles, expected):
        assert title == (f"Grad-CAM, {group} ({verdict}): {row['label']} image {os.path.basename(row['uri'])}, "
                         f"source {row['source']}, pixel P(ai) = {row['probability']:.3f}")


@pytest.mark.slow
@pytest.mark.parametrize("label, groups", [("ai", ["top-scored ai"] * 2 + ["lowest-scored ai"] * 2),
                                           ("real", ["top-scored real"] * 4)])
def test_report_figures_of_a_split_of_one_label_draw_as_many(planted_model, val_rows, tmp_path, label, groups):
    """With no real images the mistakes had only the lowest-scored ai (3 figures), with no ai only the top-scored
    real (1 figure): the empty group's share now goes to the other."""
    rows = val_rows[val_rows["label"] == label].head(10)
    titles = [t for t, _ in report_figures(planted_model, rows, tmp_path, examples=4) if t.startswith("Grad-CAM")]
    assert [t.removeprefix("Grad-CAM, ").split(" (")[0] for t in titles] == groups
    shown = [float(t.rsplit("= ", 1)[1]) for t in titles]
    probabilities = sorted(pd.read_parquet(tmp_path / "embeddings.parquet")["probability"].dropna().round(3), reverse=True)
    expected = probabilities[:4] if label == "real" else probabilities[:2] + probabilities[::-1][:2]
    assert shown == expected


def test_report_figures_leave_out_what_they_cannot_draw(planted_model, val_rows, tmp_path, caplog):
    from fakescope.models import ModelConfig, create_model, load_model, save_model

    few = report_figures(planted_model, val_rows.head(3), tmp_path / "few")
    assert few == [] and "no explanation figures: UMAP needs at least 5" in caplog.text
    save_model(create_model("spectral_lr").eval(), ModelConfig("spectral", "spectral_lr"), tmp_path / "spectral")
    figures = report_figures(load_model(tmp_path / "spectral"), val_rows, tmp_path / "figures", examples=2)
    assert figures and all(t.startswith("UMAP") for t, _ in figures)  # its embedding (the spectrum) draws, Grad-CAM not
    assert "no Grad-CAM figures: SpectralLR: no module produces the forward_features output" in caplog.text



@pytest.mark.slow
def test_embedding_report_reads_each_image_once_and_draws_the_seeded_sample(planted_model, val_rows, tmp_path):
    """The mosaic read up to --max-thumbnails images again after embedding them: an s3:// or http(s) manifest
    downloaded them twice. Thumbnails are now kept as the images are embedded, at most max_thumbnails of them: the
    readable rows first in the seed's permutation of all rows."""
    from fakescope.explain.embedding import mosaic_png
    from fakescope.train.dataset import read_source

    reads = []
    report = embedding_report(planted_model, val_rows, str(tmp_path), color_by=("label",), max_thumbnails=8, seed=3,
                              read=lambda uri: reads.append(uri) or read_source(uri))
    assert sorted(reads) == sorted(val_rows["uri"])  # the unreadable last row tried once too
    table = report.table
    sample = sorted([row for row in np.random.default_rng(3).permutation(25) if row != 24][:8])
    correct = (table["probability"] >= planted_model.config.threshold) == (table["label"] == "ai")
    title = (f"{planted_model.config.name}: UMAP thumbnails (8 of 24); k-means k=2, "
             f"label purity {report.clusters.purity:.2f}")
    expected = mosaic_png(table.loc[sample, ["umap_x", "umap_y"]].to_numpy(np.float32),
                          [read_source(table["uri"][row]) for row in sample], correct[sample].to_numpy(), title)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "umap_mosaic.png")),
                                  np.asarray(Image.open(io.BytesIO(expected))))


@pytest.mark.slow
def test_report_figures_read_each_image_once(planted_model, val_rows, tmp_path, monkeypatch):
    """The Grad-CAM examples were read again after the embedding pass (4 more reads; a URL fetched twice could give
    another image than the one scored): they are now kept, decoded, as they are embedded."""
    from fakescope.explain import report as report_module

    reads, read_source = [], report_module.read_source
    monkeypatch.setattr(report_module, "read_source", lambda uri: reads.append(uri) or read_source(uri))
    figures = report_figures(planted_model, val_rows, tmp_path, examples=4)
    assert sum(t.startswith("Grad-CAM") for t, _ in figures) == 4
    assert sorted(reads) == sorted(val_rows["uri"])  # the unreadable last row tried once too


@pytest.mark.parametrize("size", [1, 2, 4, 7])
def test_extremes_keep_every_image_the_report_examples_draw(size):
    """Ties ranked as the report ranks them: row order among the top-scored, reversed among the lowest-scored."""
    from fakescope.explain.embedding import Extremes
    from fakescope.explain.report import _examples

    rng = np.random.default_rng(size)
    table = pd.DataFrame({"label": rng.choice(["ai", "real"], 40), "probability": rng.choice([0.1, 0.5, 0.9], 40),
                          "error": None})
    extremes = Extremes(table["label"], size)
    for row, probability in enumerate(table["probability"]):
        extremes.offer(row, probability, Image.new("RGB", (1, 1), (row, 0, 0)))
    kept = extremes.kept()
    assert len(kept) <= 4 * size and all(image.getpixel((0, 0))[0] == row for row, image in kept.items())
    assert {row.Index for _, row in _examples(table, size)} <= set(kept)
