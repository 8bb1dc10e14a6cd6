"""The fakescope web app (`fakescope app`): detector, generator and report pages.

A thin Streamlit layer over `Detector`, `fakescope.serve.generation` and `report_view`.
Settings come from the environment: `FAKESCOPE_MODEL`, `FAKESCOPE_DEVICE` (default `auto`),
`FAKESCOPE_MAX_PIXELS` (larger images are refused; default as `fakescope serve --max-pixels`),
`FAKESCOPE_APP_ROOT` (every server-side path the pages write or read lies under it; default the current folder),
`FAKESCOPE_DATASET_DIR` (the generator's default dataset folder), `OPENAI_BASE_URL`, `FAKESCOPE_APP_ANONYMOUS`
(`1`: open beyond loopback, so the generator never uses the server's `OPENAI_API_KEY`), `FAKESCOPE_APP_ALLOWED_HOSTS`
(comma-separated host names a page on loopback may be reached under besides localhost, 127.0.0.1 and [::1]).
`FAKESCOPE_APP_MIN_FREE_MB` (anonymous: a dataset save that would leave less free on the root's disk is refused).
An OpenAI key typed on the generator page lives in this browser session only.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import streamlit as st
from PIL import Image

from fakescope.detection import CSV_FIELDS, Detection, csv_row
from fakescope.detector import Detector
from fakescope.errors import FakescopeError
from fakescope.generate import OpenAIImagesConfig
from fakescope.generate.openai_models import MODELS, current_models, input_fidelities
from fakescope.io import storage
from fakescope.io.fetch import fetch_url, url_name
from fakescope.io.image import decode_image
from fakescope.io.redact import redact_urls
from fakescope.serve.config import APP_ANONYMOUS_ENV
from fakescope.serve.generation import failure, generate_from_upload, openai_client, public_error, save_pair, upload_folder
from fakescope.serve.limits import check_image, env_max_pixels, env_min_free_mb
from fakescope.serve.origins import app_host_refusal
from fakescope.serve.overlay import colour_scale, display_copy, heatmap_overlay, image_bytes
from fakescope.serve.paths import RootFolder, app_root, confined
from fakescope.serve.report_view import report_contents, value_text
from fakescope.serve.uploads import score_uploads

MAX_READ_MB = 64  # the largest report, report.html or example image the pages read from under the root
SMALL_TABLE_ROWS = 50
EVIDENCE_ROW_PX = 66  # over 4rem, so the grid wraps a cell's text (to 3 lines)
COLOUR_KEY = "colour key: P(ai) 0 (real, black) to 1 (ai, yellow)"
VERDICT_COLOURS = {"ai": "red", "real": "green", "uncertain": "orange"}
MARKDOWN_SIGNS = re.compile(r"([\\`*_{}\[\]()#+\-.!|~$:<>&])")
# The generator's typed fields, kept across pages. The generator is drawn by this script, not in `Page.run`: the browser
# sends a page link's run only the values of this script's widgets, and Streamlit folds a run asked for just before (a
# field's Enter) into it, so the value typed into a page's field was lost when the link was clicked at once.
KEPT_WIDGETS = ("openai_key", "edit_prompt", "dataset_folder")
REPORT_NAMES = ("report.json", "logo.json")  # written by `fakescope evaluate` and `fakescope evaluate-logo`
log = logging.getLogger(__name__)


@st.cache_resource(show_spinner="Loading the detector...")
def _load_detector() -> Detector:
    return Detector.load(os.environ.get("FAKESCOPE_MODEL") or None, device=os.environ.get("FAKESCOPE_DEVICE", "auto"))


def detector() -> Detector:
    """The shared detector; one that cannot be loaded stops the page with one clear line."""
    try:
        return _load_detector()
    except FakescopeError as exc:
        st.error(f"Could not load the detector: {literal(exc)}")
        st.stop()


def max_pixels() -> int:
    """The pixel limit (`FAKESCOPE_MAX_PIXELS`, as `fakescope app --max-pixels` sets it); a bad one stops the page."""
    try:
        return env_max_pixels()
    except FakescopeError as exc:
        st.error(f"Bad setting: {literal(exc)}")
        st.stop()


def root() -> Path:
    """The folder every server-side path must lie under (`FAKESCOPE_APP_ROOT`, as `fakescope app --root` sets it)."""
    try:
        return app_root()
    except FakescopeError as exc:
        st.error(f"Bad setting: {literal(exc)}")
        st.stop()


def anonymous() -> bool:
    """Whether the app is open beyond loopback (`FAKESCOPE_APP_ANONYMOUS`): then it never spends the server's key."""
    return os.environ.get(APP_ANONYMOUS_ENV) == "1"


def key_advice() -> str:
    """How to give the generator an OpenAI key, for the page's warning and the failed generation's line alike."""
    if anonymous():
        return "enter yours in the field above (this app is open to anyone, so it never uses the server's)"
    return "enter one in the field above, or set OPENAI_API_KEY (environment or .env) where the app runs"


def plain(text: object) -> str:
    """The app's own `text` (a caveat, the JSON parser's message) escaped for Streamlit's Markdown, so that it shows as
    it is (`*`, `:smile:`, `:red[x]`); untrusted text (names, URLs, errors) goes through `literal`, as escaping leaves a
    bare URL a link."""
    return MARKDOWN_SIGNS.sub(r"\\\1", str(text))


def literal(text: object) -> str:
    """`text` (a file name, a URL, an error quoting one) as a Markdown code span, shown exactly as written: escaping is
    not enough, as Streamlit's Markdown still links a bare `http://...`, `www....` or `a@b.co` in plain text. The fence
    is longer than any run of backticks inside, and Markdown drops the one space padding each end."""
    text = " ".join(str(text).splitlines())  # a line break would end a heading
    fence = "`" * (max(map(len, re.findall("`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}"


class Shown(NamedTuple):
    """A detection with its image's display copy and heatmap overlay as JPEG bytes (None for a failed one)."""

    detection: Detection
    image: bytes | None = None
    overlay: bytes | None = None


def shown(detection: Detection, image: Image.Image | None) -> Shown:
    """Draw and encode once what the page shows of an image: a rerun only sends the same bytes again."""
    if image is None or detection.error:
        return Shown(detection)
    copy = display_copy(image)
    return Shown(detection, image_bytes(copy, "JPEG"), image_bytes(heatmap_overlay(copy, detection.heatmap), "JPEG"))


def score(items: list[tuple[str, bytes]]) -> list[Shown]:
    """Each image's detection (with heatmap) under its own name, shown, remembered per image content for this session
    (reruns are free; a second upload of the same bytes is not scored again, but its record carries its own name).

    New images are scored in batches (`serve.uploads.score_uploads`: at most the pixel limit decoded at
    a time); only the encoded display copies are kept, not the full-size pixels.
    """
    cache: dict = st.session_state.setdefault("detections", {})
    keys = [hashlib.sha256(data).hexdigest() for _, data in items]
    new = list({key: item for key, item in zip(keys, items) if key not in cache}.items())
    if new:
        for index, detection, image in score_uploads(detector(), [item for _, item in new], max_pixels(), heatmap=True):
            cache[new[index][0]] = shown(detection, image)
    return [cache[k]._replace(detection=dataclasses.replace(cache[k].detection, source=name))
            for k, (name, _) in zip(keys, items)]


def show_detection(name: str, view: Shown, heading: str | None = None) -> None:
    """Under `heading` (Markdown; default: the image's name as written), verdict, P(ai), reason and evidence, with the
    image (a display copy) and its heatmap overlay side by side."""
    detection = view.detection
    st.markdown(f"#### {heading or literal(name)}", anchors=False)  # an anchor would be a link made from the name
    if detection.error:
        st.error(f"{literal(name)}: {literal(detection.error)}")
        return
    colour = VERDICT_COLOURS.get(detection.verdict, "gray")
    st.markdown(f"Verdict: :{colour}[**{detection.verdict}**] &nbsp; P(ai) = **{detection.probability:.3f}**")
    if detection.caveat:
        st.warning(plain(detection.caveat))
    st.text(detection.reason or "")  # not Markdown: it may quote the image's own metadata
    left, right = st.columns(2)
    left.image(view.image, caption="image", width="stretch")
    right.image(view.overlay, caption="heatmap: per-tile P(ai)", width="stretch")
    right.image(image_bytes(colour_scale(), "PNG"), caption=COLOUR_KEY, width="content")  # which colour means ai
    # the detail column sized to fit a phone (the grid widens it to fill a wider page), its text wrapped: it ran off
    # the edge, cut off, on a phone and in the generator's half-width columns
    st.dataframe(evidence_table(detection), hide_index=True, row_height=EVIDENCE_ROW_PX,
                 column_config={"detail": st.column_config.TextColumn(width="medium")})


def evidence_table(detection: Detection) -> pd.DataFrame:
    """Kind, score and detail of each piece of evidence, the score to 3 decimals as the CLI table has it (blank: none)."""
    return pd.DataFrame([{"kind": e.kind, "score": "" if e.score is None else f"{e.score:.3f}", "detail": e.detail}
                         for e in detection.evidence], columns=["kind", "score", "detail"])


def records_csv(records: list[dict]) -> str:
    """The records as `fakescope detect --format csv` writes them: its columns, evidence lines and number formats."""
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(csv_row(record) for record in records)
    return out.getvalue()


def detector_page() -> None:
    st.title("Detector")
    st.write("Upload images to see whether a generative model made them, and why.")
    uploads = st.file_uploader("Images", accept_multiple_files=True)
    url = st.text_input("...or paste an image URL (needs internet)")
    items = [(u.name, u.getvalue()) for u in uploads or []]
    if url:
        try:  # named as detect names it (no password or signature) on the page and in the downloads
            items.append((url_name(url), fetched(url)))
        except (OSError, ValueError, FakescopeError) as exc:
            st.error(f"Could not fetch {literal(url_name(url))}: {literal(redact_urls(str(exc)))}")
    if not items:
        st.info("No image yet: upload one or more files (JPEG, PNG, WebP, HEIC, ...).")
        return
    with st.spinner("Scoring..."):
        scored = score(items)
    records = []
    for (name, _), view in zip(items, scored):
        show_detection(name, view)
        records.append(view.detection.to_dict())
    left, right = st.columns(2)
    # a download must not rerun the page: that fetched the URL again and redrew every result
    left.download_button("Download CSV", records_csv(records), "fakescope-results.csv", "text/csv", on_click="ignore")
    right.download_button("Download JSON", json.dumps(records, indent=2), "fakescope-results.json", "application/json",
                          on_click="ignore")


def fetched(url: str) -> bytes:
    """The image at `url`, fetched once for this session while it stays pasted: each rerun (another upload, a click)
    fetched it again, and the page could show another image under the same name. A failed fetch is tried again."""
    last = st.session_state.get("fetched")
    if last is None or last[0] != url:
        with st.spinner("Fetching the image..."):  # up to the fetch's timeout: the page showed nothing meanwhile
            st.session_state["fetched"] = last = (url, fetch_url(url))
    return last[1]


def generator_page() -> None:
    st.title("Generator")
    st.write("Make an ai image from a real one with the OpenAI Images API, and see at once what the detector says.")
    key = st.text_input("OpenAI API key", type="password", key="openai_key",
                        help="Kept in this browser session only; never stored or logged.")
    storage.load_env_file()  # the server's key may live in .env
    if not key and (anonymous() or not os.environ.get("OPENAI_API_KEY")):
        st.warning(f"No OpenAI API key set: {key_advice()}")
    upload = st.file_uploader("Real image", key="real")
    mode = st.radio("Mode", ["variation", "edit"], horizontal=True,
                    help="variation: a new photo of the same kind (GPT image models: an edit of the whole image by a fixed "
                         "prompt)")
    other_server = bool(os.environ.get("OPENAI_BASE_URL"))  # it may still serve the models api.openai.com retired
    model = st.selectbox("Model", current_models(mode, retired=other_server))
    size = st.selectbox("Size", [size for size in MODELS[model].sizes if size != "auto"])
    st.session_state.setdefault("edit_prompt", "make it look like a painting")
    prompt = st.text_input("Edit prompt", key="edit_prompt") if mode == "edit" else None
    fidelity = None
    if takes := input_fidelities(model):
        fidelity = st.selectbox("Input fidelity", [None, *takes], format_func=lambda value: value or "the model's default (low)",
                                help="How closely the edit keeps the photo's style and features, faces above all")
    if st.button("Generate", type="primary", disabled=upload is None):
        settings = {"mode": mode, "model": model, "size": size, "prompt": prompt, "input_fidelity": fidelity}
        run_generation(upload.name, upload.getvalue(), settings, key)
    result = st.session_state.get("generated")
    if not result:
        return
    real_col, ai_col = st.columns(2)
    with real_col:
        show_detection(result["name"], score([(result["name"], result["real"])])[0], f"real: {literal(result['name'])}")
    with ai_col:
        for index, view in enumerate(result["shown"]):
            show_detection(f"generated #{index + 1}", view, plain(f"generated #{index + 1}"))
    st.session_state.setdefault("dataset_folder", os.environ.get("FAKESCOPE_DATASET_DIR", str(root() / "data" / "generated")))
    folder = st.text_input("Dataset folder", key="dataset_folder")
    if st.button("Save both to the dataset"):
        save_to_dataset(folder.strip(), result)


def save_to_dataset(folder: str, result: dict) -> None:
    """`save_pair` into `folder` (`~` is the home folder, relative to the root); a folder outside the root, or one
    that cannot be written (anonymous: one that would leave under `FAKESCOPE_APP_MIN_FREE_MB` free), is one red line."""
    if not folder:
        st.error("Enter a dataset folder to save into.")
        return
    try:
        min_free = env_min_free_mb() if anonymous() else 0  # anyone may save: they must not fill the disk
        manifest = save_pair(str(confined(folder, root())), result["real"], [o.data for o in result["outputs"]],
                             result["config"], filename=result["name"], store=RootFolder(root(), min_free_mb=min_free))
    except (OSError, FakescopeError) as exc:
        st.error(f"Could not save to the dataset: {literal(exc)}")
        return
    st.success(f"Saved the real image and {len(result['outputs'])} ai image(s); manifest: {literal(manifest)}")


def run_generation(name: str, data: bytes, settings: dict, key: str) -> None:
    """Generate from the upload; the last result goes first, so a failure is never shown above another image's pair."""
    st.session_state.pop("generated", None)
    scorer, limit = detector(), max_pixels()  # before anything is paid for
    try:
        config = OpenAIImagesConfig(**settings)
        check_image(data, limit)
        client = openai_client(key or None, missing=f"no OpenAI API key: {key_advice()}", own_key_only=anonymous())
        folder = upload_folder(workspace(), data, config)
        # Generate clicked again mid-run starts a second run at once (the first stops only at its next page call): it
        # failed on the first's job ledger, its red line advising --out; it now waits, then shows the first's images
        with st.spinner("Generating..."), st.session_state.setdefault("generating", threading.Lock()):
            outputs = generate_from_upload(data, config, folder, client=client, filename=name,
                                           detect=lambda b: scorer.predict(b, heatmap=True))
            views = [shown(o.detection, decode_image(o.data).image) for o in outputs]  # a few Mpx at most, as the API makes them
    except Exception as exc:  # noqa: BLE001 - Streamlit would show an unexpected one's text and traceback as they came
        failed = failure(exc, key, expected=(OSError, FakescopeError))  # OSError: a full disk too
        log.warning("generation failed: %s", failed.detail)  # the page names no temporary path, the log does
        st.error(f"Generation failed: {literal(public_error(failed.line))}")
        return
    st.session_state["generated"] = {"name": name, "real": data, "outputs": outputs, "shown": views, "config": config}


def workspace() -> str:
    """This session's folder for the generator's uploads and images, removed with the session (or when the app stops):
    each session's folder was left in the temporary folder for good."""
    if "workspace" not in st.session_state:
        st.session_state["workspace"] = tempfile.TemporaryDirectory(prefix="fakescope-app-", ignore_cleanup_errors=True)
    return st.session_state["workspace"].name


def report_page() -> None:
    st.title("Evaluation report")
    st.write("Open the folder (or `report.json`) written by `fakescope evaluate`, or that of `fakescope evaluate-logo`.")
    location = st.text_input("Report folder or report.json path")
    upload = st.file_uploader("...or upload report.json", type=["json"], key="report")
    html_path = source = None
    try:
        if upload is not None:
            source = upload.name
            report = json.loads(upload.getvalue())
        elif location:
            path = report_path(confined(location, root()))
            source = path.name
            report = json.loads(root_reader().read_bytes(path))
            html_path = path.with_name("report.html")
        else:
            st.info("No report opened yet.")
            return
    except json.JSONDecodeError as exc:
        st.error(f"Could not read the report: {literal(source)} is not JSON ({plain(exc.msg)} at line {exc.lineno})")
        return
    except (OSError, ValueError, FakescopeError) as exc:
        st.error(f"Could not read the report: {literal(exc)}")
        return
    if not isinstance(report, dict):
        st.error("Could not read the report: report.json should hold a JSON object")
        return
    metrics, tables = report_contents(report)
    if not metrics and not tables:
        st.warning(f"{literal(source)} holds no metrics or tables: open the report.json (or logo.json) that "
                   "`fakescope evaluate` (or `evaluate-logo`) writes.")
        return
    st.subheader("Metrics")
    # rounded as report.html has them; the names a column of their own (the index column cut the longer ones short)
    show_table(pd.DataFrame({"metric": list(metrics), "value": [value_text(v) for v in metrics.values()]}), index=False)
    if tables:
        st.subheader("Slices and examples")
        chosen = st.selectbox("Table", list(tables))
        table = tables[chosen]
        show_table(table)
        show_examples(table)
    if html_path is not None and (html := read_under_root(html_path)) is not None:
        st.subheader("report.html")
        st.components.v1.html(html.decode(errors="replace"), height=800, scrolling=True)


def show_table(table: pd.DataFrame, index: bool = True) -> None:
    """A report's table as a grid, its cells and labels plain text (`st.table` renders them as Markdown: a crafted
    report's `[k](http://k.ey)`, `www....` or `*b*` was a link or formatting); a small one whole, a long one scrolls."""
    st.dataframe(table, height="content" if len(table) <= SMALL_TABLE_ROWS else "auto", hide_index=not index)


def report_path(path: Path) -> Path:
    """The JSON file to open: `path` itself, or the report a folder holds."""
    if not path.is_dir():
        return path
    found = next((path / name for name in REPORT_NAMES if (path / name).is_file()), None)
    if found is None:
        raise FakescopeError(f"no {' or '.join(REPORT_NAMES)} in {path}")
    return found


def show_examples(table: pd.DataFrame, most: int = 12) -> None:
    """Thumbnails of the first `most` images a table names in a `path` or `uri` column, where they exist under the
    root (files that are no image, a damaged one or one over the pixel limit are left out, and counted in a caption:
    `st.image` would raise on them)."""
    column = next((c for c in ("path", "uri") if c in table.columns), None)
    thumbnails, left_out = [], 0
    for path in table[column] if column else ():
        if len(thumbnails) == most:
            break
        if data := example_image(str(path)):
            thumbnails.append((Path(str(path)).name, data))
        else:
            left_out += 1
    if thumbnails:
        st.image([data for _, data in thumbnails], caption=[literal(name) for name, _ in thumbnails], width=160)
    if left_out:
        st.caption(f"{left_out} image(s) the report names not shown: outside the app's folder, not an image, damaged, "
                   "over the pixel or size limit, or a file with other hard links")


def example_image(path: str) -> bytes | None:
    """A JPEG display copy of an image under the root within the pixel limit, or None (no image, a truncated one, one
    under `decode_image`'s smallest side)."""
    if (data := read_under_root(path)) is None:
        return None
    try:
        check_image(data, max_pixels())
        return image_bytes(display_copy(decode_image(data).image), "JPEG")
    except FakescopeError:
        return None


def root_reader() -> RootFolder:
    """How the pages read files under the root: through `RootFolder`, none over `MAX_READ_MB`."""
    return RootFolder(root(), max_read_mb=MAX_READ_MB)


def read_under_root(path: str | Path) -> bytes | None:
    """The file's bytes through `RootFolder` (the root's files only, whatever is swapped in), or None where it cannot."""
    try:
        return root_reader().read_bytes(path)
    except (OSError, FakescopeError):
        return None


def refuse_rebound_host() -> None:
    """Stop a page that reached the app on loopback under another name (DNS rebinding: a site whose name now points
    at 127.0.0.1 would be same-origin with the app and could drive it, the generator's key included).

    `fakescope app` has Streamlit refuse such a page its session first (`webapp_command`); this check covers the
    script started otherwise (`streamlit run`)."""
    try:
        refusal = app_host_refusal(st.context.headers.get("Host"), st.get_option("server.address") or "")
    except FakescopeError as exc:
        refusal = f"Bad setting: {exc}"
    if refusal:
        st.error(literal(refusal))  # it quotes the Host header
        st.stop()


def main() -> None:
    st.set_page_config(page_title="fakescope", layout="wide")
    refuse_rebound_host()
    for name in KEPT_WIDGETS:  # Streamlit forgets a widget's value when a page without it is shown; saving it keeps it
        if name in st.session_state:
            st.session_state[name] = st.session_state[name]
    pages = [
        st.Page(detector_page, title="Detector", url_path="detector", default=True),
        st.Page(generator_page, title="Generator", url_path="generator"),
        st.Page(report_page, title="Report", url_path="report"),
    ]
    page = st.navigation(pages)
    if page.url_path == "generator":
        generator_page()  # its widgets belong to this script, not a page: a page link sends their values (see KEPT_WIDGETS)
    else:
        page.run()


main()
