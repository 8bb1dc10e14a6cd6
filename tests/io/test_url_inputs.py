"""http(s) image URLs as inputs of `detect`, `scan` and `Detector.predict`, fetched from a real loopback HTTP server
(trusted through FAKESCOPE_TRUSTED_ORIGINS, as an intranet image server would be)."""

from __future__ import annotations

import json
import socket

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from image_server import serving_images
from typer.testing import CliRunner

from fakescope.cli import app
from fakescope.detector import Detector
from fakescope.explain.report import overlay_name
from fakescope.io.fetch import SIGNING_PARAMETERS, TRUSTED_ENV, URL_MAX_BYTES, legacy_url_name, shown_source
from fakescope.scale import read_results
from fakescope.scale.records import part_files
from fakescope.scale.scoring import NAMES_KEY

BIG = URL_MAX_BYTES + 1024


@pytest.fixture(scope="module")
def server(image_factory):
    with serving_images(image_factory.bytes("PNG", (96, 80), 1), big=BIG) as origin:
        yield origin


@pytest.fixture
def trusted(server, monkeypatch):
    monkeypatch.setenv(TRUSTED_ENV, f"http://other.example:81, {server}")
    return server


def _urls(origin: str) -> list[str]:
    signed = origin.replace("http://", "http://user:hunter22pass@") + "/signed.png?X-Amz-Signature=SECRETSIG"
    return [f"{origin}/a.png", signed, f"{origin}/missing.png", f"{origin}/page.html", f"{origin}/big.png",
            f"{origin}/text.png"]


def _check(records: list[dict], origin: str) -> None:
    """The images scored, each failed fetch its own one-line error, the signed URL named without its secrets."""
    assert [r["path"] for r in records] == [f"{origin}/a.png", f"{origin}/signed.png",  # a query of signing alone
                                            *(f"{origin}/{name}" for name in ("missing.png", "page.html", "big.png",
                                                                             "text.png"))]
    assert [r.get("error") for r in records[:2]] == [None, None] and records[0]["score"] == records[1]["score"]
    assert [r["error"] for r in records[2:]] == [
        "HTTP Error 404: Not Found",
        "the URL answered text/html, not an image (a web page? use the image's own address)",
        f"the file at that URL is over {URL_MAX_BYTES:,} bytes", "not an image (unrecognised file signature)"]
    assert "hunter22pass" not in json.dumps(records) and "SECRETSIG" not in json.dumps(records)


def test_predict_scores_urls_and_gives_each_failed_fetch_its_error(tiny_model_dir, trusted):
    detector = Detector.load(tiny_model_dir, device="cpu", provenance=False)
    _check([d.to_dict() for d in detector.predict(_urls(trusted))], trusted)
    assert detector.predict(f"{trusted}/a.png").ok


def test_detect_takes_urls_as_arguments_and_on_stdin(tiny_model_dir, trusted):
    for args, stdin in (_urls(trusted), None), (["-"], "\n".join(_urls(trusted)) + "\n"):
        result = CliRunner().invoke(app, ["detect", "--model", str(tiny_model_dir), "--no-provenance", "-f", "jsonl",
                                          *args], input=stdin)
        assert result.exit_code == 1 and result.stderr == ""
        _check([json.loads(line) for line in result.stdout.splitlines()], trusted)


def test_scan_takes_urls_from_a_manifest_and_stdin(tiny_model_dir, trusted, tmp_path):
    (tmp_path / "urls.csv").write_text("uri\n" + "\n".join(_urls(trusted)) + "\n")
    for name, args, stdin in ("m", [str(tmp_path / "urls.csv")], None), ("s", ["-"], "\n".join(_urls(trusted))):
        result = CliRunner().invoke(app, ["scan", *args, "--out", str(tmp_path / name), "--model", str(tiny_model_dir),
                                          "--device", "cpu", "--no-provenance", "--runtime", "torch"], input=stdin)
        assert result.exit_code == 1 and result.output.startswith("scanned 6  failed 4  ")
        frame = read_results(tmp_path / name)  # one part, in input order
        rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
        _check([{k: v for k, v in row.items() if v is not None} for row in rows], trusted)
    rerun = CliRunner().invoke(app, ["scan", str(tmp_path / "urls.csv"), "--out", str(tmp_path / "m"), "--model",
                                     str(tiny_model_dir), "--device", "cpu", "--no-provenance", "--runtime", "torch"])
    assert rerun.exit_code == 0 and rerun.output.startswith("scanned 0  failed 0  skipped (done before) 6 ")  # signed too


def test_scan_keeps_urls_that_differ_only_in_their_query_apart_but_not_their_signature(tiny_model_dir, trusted,
                                                                                        tmp_path):
    """A name hashes the query without its signing parameters: `?id=1` and `?id=2` keep apart, and a URL signed again
    for a rerun (new signature and expiry) keeps its name, so the rerun skips it rather than scoring it again."""
    signed = "&X-Amz-Expires={0}&X-Amz-Signature=SECRETSIG{0}"
    urls = [f"{trusted}/a.png?id=1" + signed.format(1), f"{trusted}/a.png?id=2" + signed.format(1), f"{trusted}/a.png"]
    resigned = [url.replace(signed.format(1), signed.format(2)) for url in urls[:2]]
    command = ["scan", "-", "--out", str(tmp_path / "out"), "--model", str(tiny_model_dir), "--device", "cpu",
               "--no-provenance", "--runtime", "torch"]
    first = CliRunner().invoke(app, command, input="\n".join(urls[:2]))
    again = CliRunner().invoke(app, command, input="\n".join([*resigned, urls[2]]))
    assert first.output.startswith("scanned 2  failed 0  ") and again.output.startswith("scanned 1  failed 0  skipped "
                                                                                         "(done before) 2 ")
    paths = sorted(read_results(tmp_path / "out")["path"])
    assert paths[0] == f"{trusted}/a.png" and len({*paths}) == 3
    assert all(path.startswith(f"{trusted}/a.png#query=") for path in paths[1:])
    assert "SECRETSIG" not in str(paths)


def test_a_scan_rerun_retries_urls_that_failed_for_a_passing_reason_and_not_the_others(tiny_model_dir, trusted,
                                                                                       tmp_path, monkeypatch):
    """A 503, a 429 or a refused connection was an error row counted as done: a rerun never tried it again. Now its
    row's error_kind is transient, the summary says how many a rerun retries, and the rerun's row replaces it; a 404 or
    a web page stays done."""
    with socket.socket() as closed:  # a port nothing listens on: connection refused
        closed.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{closed.getsockname()[1]}"
    monkeypatch.setenv(TRUSTED_ENV, f"{trusted},{refused}")
    urls = [f"{trusted}/flaky.png?n=retry", f"{trusted}/limited.png", f"{refused}/a.png", f"{trusted}/missing.png",
            f"{trusted}/page.html", f"{trusted}/a.png"]
    out = tmp_path / "out"
    command = ["scan", "-", "--out", str(out), "--model", str(tiny_model_dir), "--device", "cpu", "--no-provenance",
               "--runtime", "torch"]
    first = CliRunner().invoke(app, command, input="\n".join(urls))
    assert first.exit_code == 1 and first.output.startswith("scanned 6  failed 5 (3 to retry: rerun the scan)  skipped "
                                                            "(done before) 0 ")
    rows = read_results(out).set_index("path")
    assert rows["error_kind"].fillna("scored").tolist() == ["transient"] * 3 + ["permanent"] * 2 + ["scored"]
    assert rows["error"].iloc[:3].tolist() == ["HTTP Error 503: Service Unavailable", "HTTP Error 429: Too Many Requests",
                                               rows["error"].iloc[2]] and rows["error"].iloc[2].startswith("ConnectError")
    again = CliRunner().invoke(app, command, input="\n".join(urls))  # flaky answers now; the others fail again
    assert again.exit_code == 1 and again.output.startswith("scanned 3  failed 2 (2 to retry: rerun the scan)  skipped "
                                                            "(done before) 3 ")
    rows = read_results(out)
    names = [shown_source(url) for url in urls]
    assert sorted(rows["path"]) == sorted(names) and pd.isna(rows.set_index("path").loc[names[0], "error_kind"])
    assert len(pd.read_parquet(out)) == 6  # the rerun rewrote the parts holding the transient rows it superseded


def test_detect_records_say_which_failed_fetches_may_pass_in_jsonl_and_csv(tiny_model_dir, trusted, monkeypatch):
    """Only scan's rows said so: a JSONL or CSV record of a 503 could not be told from a 404's but by its message."""
    import csv
    import io

    from fakescope.detection import Detection

    urls = [f"{trusted}/limited.png", f"{trusted}/missing.png", f"{trusted}/a.png"]
    command = ["detect", "-", "--model", str(tiny_model_dir), "--device", "cpu", "--no-provenance"]
    jsonl = CliRunner().invoke(app, [*command, "-f", "jsonl"], input="\n".join(urls))
    records = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert jsonl.exit_code == 1 and [r.get("error_kind") for r in records] == ["transient", "permanent", None]
    assert [Detection.from_dict(r).transient for r in records] == [True, False, False]
    table = CliRunner().invoke(app, [*command, "-f", "csv"], input="\n".join(urls))
    rows = list(csv.reader(io.StringIO(table.stdout)))
    assert rows[0][-2:] == ["caveat", "error_kind"] and [r[-1] for r in rows[1:]] == ["transient", "permanent", ""]


@pytest.mark.parametrize("query", [
    "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDSECRET&X-Amz-Security-Token=TOKSECRET&X-Amz-Signature=S1",
    "x-amz-algorithm=AWS4-HMAC-SHA256&x-amz-credential=AKIDSECRET&x-amz-signature=S1",
    "AWSAccessKeyId=AKIDSECRET&Expires=1700000000&Signature=S1",
    "Expires=1700000000&Signature=S1&Key-Pair-Id=KSECRET&Policy=PSECRET&Hash-Algorithm=SHA256",
    "X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=CSECRET&X-Goog-Signature=S1",
    "GoogleAccessId=GSECRET&Expires=1700000000&Signature=S1",
    "sv=2022-11-02&sr=b&sp=r&st=2024-01-01&se=2024-01-02&spr=https&sip=1.2.3.4&skoid=OSECRET&sig=S1",
    "token=TSECRET", "access_token=TSECRET"])
def test_a_query_of_signing_parameters_alone_adds_nothing_to_the_name(query):
    url = "https://user:PWSECRET@images.example/k.jpg"
    assert shown_source(f"{url}?{query}") == "https://images.example/k.jpg"
    assert shown_source(f"{url}?id=1&{query}") == shown_source(f"{url}?id=1&{query.replace('S1', 'S2')}") != \
        shown_source(f"{url}?id=2&{query}")
    assert "SECRET" not in shown_source(f"{url}?id=1&{query}")


def test_every_parameter_of_the_signing_table_is_left_out_of_a_name_beside_its_providers_marks():
    for rule in SIGNING_PARAMETERS.values():
        names = [name.replace("*", "Date") for name in rule.names]
        assert shown_source("https://images.example/k.jpg?" + "&".join(f"{name}=SECRET" for name in names)) == \
            "https://images.example/k.jpg", rule


@pytest.mark.parametrize("own", ["se", "sp", "sig", "Signature", "Expires", "Policy", "SIG", "SV"])
def test_a_sites_own_parameter_named_as_another_providers_signing_one_keeps_urls_apart(own):
    """`se`, `sp`, `sig` sign only an Azure SAS (with `sv` and `sig`), `Signature` only beside its provider's key id:
    matched in any case and alone, two images of one site shared a name."""
    names = {shown_source(f"https://images.example/k.jpg?{own}={n}") for n in (1, 2)}
    assert len(names) == 2 and all(name.startswith("https://images.example/k.jpg#query=") for name in names)


def test_a_folder_named_the_legacy_way_resumes_its_urls_once_each(tiny_model_dir, trusted, tmp_path):
    """A part written before the signing rule had marks (no url_names mark, a site's `se` left out of its name): a rerun
    skips each URL whose legacy name it holds, once; a second URL that the legacy name merged is scored apart."""
    out = tmp_path / "out"
    command = ["scan", "-", "--out", str(out), "--model", str(tiny_model_dir), "--device", "cpu", "--no-provenance",
               "--runtime", "torch"]
    urls = [f"{trusted}/a.png?se=1", f"{trusted}/a.png?id=3&Signature=S"]
    assert CliRunner().invoke(app, command, input="\n".join(urls)).output.startswith("scanned 2  failed 0  ")
    for part in part_files(out):  # as the legacy rule named and marked them
        table = pq.read_table(part)
        legacy = [legacy_url_name(url) for url in urls]
        assert legacy != table.column("path").to_pylist()
        metadata = {k: v for k, v in table.schema.metadata.items() if k != NAMES_KEY}
        pq.write_table(table.set_column(0, "path", pa.array(legacy)).replace_schema_metadata(metadata), part)
    again = CliRunner().invoke(app, command, input="\n".join([*urls, f"{trusted}/a.png?se=2"]))
    assert again.output.startswith("scanned 1  failed 0  skipped (done before) 2 ")
    assert sorted(read_results(out)["path"]) == sorted([*legacy, shown_source(f"{trusted}/a.png?se=2")])


def test_a_url_on_loopback_is_refused_unless_its_origin_is_trusted(tiny_model_dir, server):
    result = CliRunner().invoke(app, ["detect", "--model", str(tiny_model_dir), "--no-provenance", "-f", "jsonl",
                                      f"{server}/a.png"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"] == ("refused to fetch from '127.0.0.1': it resolves to 127.0.0.1, a "
                                                  "non-public address")


def test_a_url_is_no_output(tmp_path, server):
    result = CliRunner().invoke(app, ["scan", str(tmp_path), "--out", f"{server}/results.parquet"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [f"error: unsupported storage scheme 'http' in '{server}/results.parquet'; "
                                          "use a path, s3:// or gdrive://"]


def test_explain_names_and_captions_a_signed_url_without_its_secrets(tiny_model_dir, trusted, tmp_path):
    """The overlay's caption showed the URL's signature and the error line its password; both now name the URL as
    detect does."""
    import numpy as np
    from PIL import Image

    signed = trusted.replace("http://", "http://user:hunter22pass@") + "/signed.png?X-Amz-Signature=SECRETSIG"
    missing = trusted.replace("http://", "http://user:hunter22pass@") + "/missing.png?X-Amz-Signature=SECRETSIG"
    base = ["explain", "--model", str(tiny_model_dir), "--method", "tiles", "--device", "cpu"]
    result = CliRunner().invoke(app, [*base, signed, missing, "--out", str(tmp_path / "signed")])
    assert result.exit_code == 1
    name = f"{overlay_name(f'{trusted}/signed.png')}_tiles.png"  # the signed URL's too: named without its secrets
    assert result.stdout == f"{trusted}/signed.png\t{tmp_path / 'signed' / name}\n"  # input, its files
    assert result.stderr == f"error: {trusted}/missing.png: HTTP Error 404: Not Found\n"
    plain = CliRunner().invoke(app, [*base, f"{trusted}/signed.png", "--out", str(tmp_path / "plain")])
    assert plain.exit_code == 0, plain.output
    drawn = [np.asarray(Image.open(tmp_path / folder / name)) for folder in ("signed", "plain")]
    np.testing.assert_array_equal(*drawn)  # the same caption: no signature drawn


@pytest.mark.slow  # embed's UMAP compiles with numba on its first fit
def test_embed_names_a_signed_url_it_could_not_read_without_its_secrets(tiny_model_dir, trusted, tmp_path):
    secret = trusted.replace("http://", "http://user:hunter22pass@")
    rows = [f"{secret}/{i}.png?X-Amz-Signature=SECRETSIG,{('real', 'ai')[i % 2]}" for i in range(6)]
    (tmp_path / "m.csv").write_text("uri,label\n" + "\n".join([*rows, f"{secret}/missing.png?X-Amz-Signature=SECRETSIG,ai"]))
    result = CliRunner().invoke(app, ["embed", str(tmp_path / "m.csv"), "--model", str(tiny_model_dir), "--device", "cpu",
                                      "--out", str(tmp_path / "e")])
    assert result.exit_code == 1, result.output  # written, one image left out
    assert f"note: {trusted}/missing.png: HTTP Error 404: Not Found\n" in result.stderr
    assert "SECRETSIG" not in result.output and "hunter22pass" not in result.output


def test_explain_names_a_url_by_its_paths_file_name_keeping_two_queries_apart(tiny_model_dir, trusted, tmp_path):
    """Output names were cut at the last dot of the URL's name, so a path with no suffix kept its `#query=<hash>`
    (`download#query=1f0e..._tiles.png`) and one ending `/` was named `#query=...` alone. They now take the path's
    file name (the host where there is none), then a hash of the URL as named, so two differing in their query differ."""
    urls = [f"{trusted}/img.png?v=1.2", f"{trusted}/img.png?v=1.3", f"{trusted}/download?id=1.2", f"{trusted}/shots/?id=3",
            f"{trusted}?id=4"]
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["explain", *urls, "--model", str(tiny_model_dir), "--method", "tiles",
                                      "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    host = trusted.removeprefix("http://").replace(":", "_")
    names = [overlay_name(url) for url in urls]
    assert [line.split("\t")[1] for line in result.stdout.splitlines()] == [str(out / f"{name}_tiles.png") for name in names]
    assert [name[:-9] for name in names] == ["img", "img", "download", "shots", host] and len(set(names)) == 5
    assert [line.split("\t")[0] for line in result.stdout.splitlines()][:2] == [shown_source(url) for url in urls[:2]]


@pytest.mark.parametrize("source, stem", [
    ("https://u:p@h.example/a/b.c.png?X-Amz-Signature=s&v=1.2#frag.x", "b.c"), ("https://h.example:8443/", "h.example_8443"),
    ("s3://bucket/k/img.webp", "img"), ("/data/a.b/c", "c"), ("folder/x.png", "x")])
def test_source_stem_takes_a_urls_path_alone(source, stem):
    from fakescope.io.fetch import source_stem

    assert source_stem(source) == stem
