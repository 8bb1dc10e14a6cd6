"""Render an `EvaluationReport`: one self-contained HTML page plus report.json and scores.csv.

The page needs nothing beyond itself: styles are inline, figures are matplotlib PNGs and
thumbnails JPEGs embedded as base64 data URIs, so it opens offline and can be mailed around.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from fakescope.errors import ConfigError
from fakescope.evaluate.evaluator import EvaluationReport
from fakescope.evaluate.metrics import INTERVAL_METRICS, RATES, few_images_note
from fakescope.evaluate.slices import not_sliced_line
from fakescope.io.image import sniff_format

ExtraFigure = tuple[str, "str | os.PathLike | bytes"]

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.6rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0 1rem}td,th{border:1px solid #ddd;padding:.25rem .6rem;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}td:first-child,.ex{overflow-wrap:anywhere}
.figs{display:flex;flex-wrap:wrap;gap:1rem}.figs figure{margin:0}.figs img{width:340px}
.examples{display:flex;flex-wrap:wrap;gap:.8rem}.ex{width:170px;font-size:.8rem}.ex img{max-width:160px;display:block}
.warn{border:2px solid #b00020;background:#fdecea;padding:.5rem 1rem;margin:1rem 0}
.mistake{color:#b00020}.correct{color:#1b5e20}.meta td{text-align:left}figcaption{font-size:.85rem;color:#555}
"""
ROWS_SHOWN = 200
"""Rows of one slice or failure table the page shows; report.json holds them all."""
_METRIC_NAMES = {
    "auc": "ROC AUC", "ap": "average precision", "accuracy": "accuracy", "balanced_accuracy": "balanced accuracy",
    "precision": "precision", "recall": "recall (ai found)", "eer": "equal error rate", "ece": "calibration error (ECE)",
    "uncertain_rate": "uncertain rate",
}
_RATE_NAMES = {
    "false_positive_rate": "false-positive rate (reals called ai)", "miss_rate": "miss rate (ai called real)",
    "uncertain_rate_real": "uncertain share of reals", "uncertain_rate_ai": "uncertain share of ai",
}


def write_report(report: EvaluationReport, out: str | os.PathLike,
                 extra_figures: Iterable[ExtraFigure] | None = None) -> dict[str, str]:
    """Write `report.html`, `report.json` and `scores.csv` into `out` (a folder or storage URI).

    Args:
        extra_figures: `(title, PNG/JPEG path or bytes)` pairs to embed, e.g. from
            `fakescope.explain.report_figures(...)`.

    Returns:
        `{"html": ..., "json": ..., "csv": ...}` locations written.
    """
    from fakescope.io import storage

    out = os.fspath(out)
    paths = {"html": storage.join(out, "report.html"), "json": storage.join(out, "report.json"),
             "csv": storage.join(out, "scores.csv")}
    storage.write_bytes(paths["json"], json.dumps(report.to_dict(), indent=2).encode())
    storage.write_bytes(paths["csv"], pd.DataFrame(report.scores).to_csv(index=False).encode())
    storage.write_bytes(paths["html"], render_html(report, extra_figures).encode())
    return paths


def render_html(report: EvaluationReport, extra_figures: Iterable[ExtraFigure] | None = None) -> str:
    """The whole report as one HTML document with every asset inline."""
    data = report.to_dict()
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>fakescope evaluation: {_e(report.model)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Evaluation of <code>{_e(report.model)}</code> on split <code>{_e(report.split)}</code></h1>",
        _summary(data),
        "<h2>Shortcuts</h2>", _shortcuts(data["shortcuts"]),
        "<h2>Overall</h2>", _overall(data), _rates(data), _confusion(data["overall"]["confusion"], report.threshold),
        _confusion(data["pixel_overall"]["confusion"], report.threshold, "pixel model only") if report.provenance else "",
        _calibration(data["reliability"]),
        _counts("Verdicts", data["verdicts"]), _counts("Decided by", data["decided_by"]),
        "<h2>Figures</h2><div class='figs'>", *_figures(data), "</div>",
        "<h2>Slices</h2>", _slices(data["slices"]),
    ]
    if data["robustness"]:
        parts += ["<h2>Robustness</h2>",
                  "<p>Pixel model only, each image perturbed before the model's own preprocessing. "
                  "<code>auc_drop</code> = clean AUC minus perturbed AUC.</p>",
                  _table(data["robustness"])]
        if data["robustness_skipped"]:
            parts += [f"<h3>Left out of every row: a perturbation could not be applied "
                      f"({len(data['robustness_skipped'])})</h3>", _table(data["robustness_skipped"], "the first")]
    parts += ["<h2>Examples</h2>", _examples(data["examples"], report.thumbnails)]
    extras = list(extra_figures or [])
    if extras:
        parts += ["<h2>Explanations</h2><div class='figs'>", *(_extra(t, s) for t, s in extras), "</div>"]
    if data["failures"]:
        parts += [f"<h2>Images left out ({len(data['failures'])})</h2>", _table(data["failures"], "the first")]
    parts.append("</body></html>")
    return "\n".join(parts)


# -- sections ----------------------------------------------------------------------------


def _summary(data: dict) -> str:
    prep = data["preprocessing"]
    shown = {k: prep[k] for k in ("bottom_crop", "base_jpeg_quality") if k in prep}
    rows = [
        ("model location", data["location"]),
        ("images scored", f"{data['overall']['n']} ({data['overall']['n_ai']} ai, "
                          f"{data['overall']['n'] - data['overall']['n_ai']} real), "
                          f"{len(data['failures'])} left out (unreadable or no finite score)"),
        ("decision", f"threshold {data['threshold']:g}, uncertain band [{data['band'][0]:g}, {data['band'][1]:g})"),
        ("provenance evidence fused", "yes" if data["provenance"] else "no (pixel model only)"),
        ("recipe preprocessing", json.dumps(shown) if shown else "none"),
        ("seconds", data["seconds"]),
    ]
    return "<table class='meta'>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows) + "</table>"


def _shortcuts(section: dict | None) -> str:
    """The shortcut audit: a warning box naming each flagged check, then every check with its neutralization."""
    if section is None:
        return "<p>Not audited (<code>--no-audit</code>): run <code>fakescope dataset audit</code> on these rows.</p>"
    flagged = [c for c in section["checks"] if c["name"] in section["flagged"]]
    box = ("<div class='warn'><strong>Warning: in these images, a property other than content separates real from "
           "ai; the figures may measure it, not the detector's skill.</strong><ul>"
           + "".join(f"<li>{_e(c['description'])}: {_e(c['level'])}, separability {c['separability']:.2f}"
                     f"{' (only partly neutralized: ' + _e(c['how']) + ')' if c['neutralized'] == 'partly' else ''}</li>"
                     for c in flagged) + "</ul></div>") if flagged else ""
    inspected = ", ".join(f"{n} {label}" for label, n in section["inspected"].items()) or "none"
    rows = [{"check": c["name"], "level": c["level"], "separability": c["separability"],
             **{label: c["per_class"].get(label, "") for label in ("real", "ai")},
             "neutralized by the model": f"{c['neutralized']}: {c['how']}"} for c in section["checks"]]
    notes = "".join(f"<li>{_e(n)}</li>" for n in section["notes"])
    return (f"{box}<p>As <code>fakescope dataset audit</code>, on {_e(inspected)} images inspected; "
            "split leaks are not checked here.</p>" + _table(rows) + (f"<ul>{notes}</ul>" if notes else ""))


def _overall(data: dict) -> str:
    pixel_head = "<th>pixel model only</th>" if data["provenance"] else ""
    head = f"<tr><th>metric</th><th>value</th><th>95% CI</th>{pixel_head}</tr>"
    rows = []
    for key in (*INTERVAL_METRICS, "uncertain_rate"):
        ci = data["intervals"].get(key)
        interval = f"[{_num(ci[0])}, {_num(ci[1])}]" if ci else ""
        pixel = f"<td>{_num(data['pixel_overall'][key])}</td>" if data["provenance"] else ""
        rows.append(f"<tr><td>{_e(_METRIC_NAMES[key])}</td><td>{_num(data['overall'][key])}</td><td>{interval}</td>{pixel}</tr>")
    shown = any(lo is not None for lo, _ in data["intervals"].values())  # none for --bootstrap 0, or no usable resample
    few = few_images_note(data["overall"]["n"], data["overall"]["n_ai"]) if shown else None
    return f"<table>{head}{''.join(rows)}</table>" + (f"<p class='warn'>Intervals: {_e(few)}.</p>" if few else "")


def _rates(data: dict) -> str:
    """The counted rates with their exact binomial intervals (none in a report.json of an earlier version)."""
    rates = data.get("rates")
    if not rates:
        return ""
    caption = (f"Counted rates at threshold {data['threshold']:g}, uncertain band [{data['band'][0]:g}, "
               f"{data['band'][1]:g}), with exact binomial (Clopper-Pearson) 95% intervals")
    rows = "".join(f"<tr><td>{_e(_RATE_NAMES[k])}</td><td>{rates[k]['count']}</td><td>{rates[k]['of']}</td>"
                   f"<td>{_num(rates[k]['value'])}</td><td>[{_num(rates[k]['ci'][0])}, {_num(rates[k]['ci'][1])}]</td></tr>"
                   for k in RATES if k in rates)
    return (f"<table><caption>{_e(caption)}</caption><tr><th>rate</th><th>images</th><th>of</th><th>value</th>"
            f"<th>95% CI (exact)</th></tr>{rows}</table>")


def _confusion(matrix: list[list[int]], threshold: float, which: str = "") -> str:
    (tn, fp), (fn, tp) = matrix
    return (f"<table><caption>Confusion matrix at threshold {threshold:g}{', ' + which if which else ''}</caption>"
            "<tr><th></th><th>called real</th><th>called ai</th></tr>"
            f"<tr><td>real</td><td>{tn}</td><td>{fp}</td></tr><tr><td>ai</td><td>{fn}</td><td>{tp}</td></tr></table>")


def _calibration(reliability: dict[str, list]) -> str:
    """The reliability diagram's bins as numbers: images, mean P(ai) and observed share of ai."""
    rows = [{"mean P(ai)": c, "share ai": f, "images": n}
            for c, f, n in zip(reliability["confidence"], reliability["frequency"], reliability["count"])]
    return _table(rows, caption="Reliability bins (10 of equal width over P(ai); empty ones left out)")


def _counts(title: str, counts: dict[str, int]) -> str:
    return f"<table><caption>{_e(title)}</caption>" + "".join(
        f"<tr><td>{_e(k)}</td><td>{v}</td></tr>" for k, v in sorted(counts.items())) + "</table>"


def _slices(slices: dict) -> str:
    parts = []
    if slices["generator"]:
        parts += ["<h3>Per generator (its images vs all real images)</h3>", _slice_table(slices["generator"])]
    if slices["source"]:
        parts += ["<h3>Per source</h3>", _slice_table(slices["source"])]
    for column, rows in slices["attributes"].items():
        parts += [f"<h3>Per {_e(column)}</h3>", _slice_table(rows)]
    if slices["not_sliced"]:
        parts.append(f"<p>{_e(not_sliced_line(slices['not_sliced']))}</p>")
    return "\n".join(parts) or "<p>No slices.</p>"


def _examples(examples: list[dict], thumbnails: dict[str, str]) -> str:
    cards = []
    for ex in examples:
        thumb = thumbnails.get(ex["uri"])
        img = f"<img src='{thumb}' alt='{_e(Path(ex['uri']).name)}'>" if thumb else "<p>(not readable)</p>"
        cards.append(
            f"<div class='ex'>{img}<span class='{ex['kind']}'>{_e(ex['kind'])}</span>: {_e(ex['label'])}, "
            f"P(ai) {ex['probability']:.3f} ({_e(ex['verdict'])})<br>{_e(ex['generator'] or ex['source'])}<br>"
            f"<small>{_e(Path(ex['uri']).name)}</small></div>")
    return f"<div class='examples'>{''.join(cards)}</div>" if cards else "<p>No examples.</p>"


def _extra(title: str, source: str | os.PathLike | bytes) -> str:
    return _figure_tag(title, figure_data_uri(source))


def figure_data_uri(source: str | os.PathLike | bytes) -> str:
    """A PNG or JPEG figure (path or bytes) as a `data:` URI; anything else (an SVG, a PDF) is a `ConfigError`."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    kind = sniff_format(data)
    if kind not in ("PNG", "JPEG"):
        name = "a figure given as bytes" if isinstance(source, bytes) else os.fspath(source)
        raise ConfigError(f"{name}: not a PNG or JPEG image, which report figures must be")
    return f"data:image/{kind.lower()};base64,{base64.b64encode(data).decode('ascii')}"


def _slice_table(rows: list[dict[str, Any]]) -> str:
    """A slice table; past `ROWS_SHOWN` slices, the largest ones, still in name order."""
    if len(rows) > ROWS_SHOWN:
        largest = set(sorted(range(len(rows)), key=lambda i: -rows[i]["n"])[:ROWS_SHOWN])
        return _table([r for i, r in enumerate(rows) if i in largest], "the largest", len(rows))
    return _table(rows)


def _table(rows: list[dict[str, Any]], which: str = "", total: int | None = None, caption: str = "") -> str:
    """Rows as a table; past `ROWS_SHOWN` rows, `which` ROWS_SHOWN of `total` and a note that the rest are in report.json."""
    if not rows:
        return "<p>None.</p>"
    total = len(rows) if total is None else total
    rows = rows[:ROWS_SHOWN]
    columns = list(rows[0])
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_num(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    note = f"<p>Showing {which} {len(rows)} of {total}; report.json lists all.</p>" if total > len(rows) else ""
    title = f"<caption>{_e(caption)}</caption>" if caption else ""
    return f"{note}<table>{title}<tr>{head}</tr>{body}</table>"


# -- figures -----------------------------------------------------------------------------


def _figures(data: dict) -> list[str]:
    """ROC, precision-recall (both labels), reliability, score histogram and robustness bars (an AUC), as figure tags."""
    figures = []
    if data["curves"]["roc"]["fpr"]:
        figures += [_plot("ROC curve", lambda ax: _roc(ax, data)), _plot("Precision-recall curve", lambda ax: _pr(ax, data))]
    figures += [_plot("Reliability diagram", lambda ax: _reliability(ax, data)),
                _plot("Score distribution", lambda ax: _histogram(ax, data))]
    if any(row["auc"] is not None for row in data["robustness"]):  # one label: no AUC, not bars of AUC 0
        figures.append(_plot("Robustness", lambda ax: _robustness(ax, data["robustness"])))
    return figures


def _plot(title: str, draw) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 4))
    draw(fig.subplots())
    return _figure_tag(title, _png(fig))


def _roc(ax, data: dict) -> None:
    roc, auc, ci = data["curves"]["roc"], data["overall"]["auc"], data["intervals"].get("auc")
    ax.plot(roc["fpr"], roc["tpr"], label=f"AUC {_num(auc)}" + (f" [{_num(ci[0])}, {_num(ci[1])}]" if ci else ""))
    ax.plot([0, 1], [0, 1], ls=":", color="grey")
    ax.set(xlabel="false positive rate (real called ai)", ylabel="true positive rate (ai found)", title="ROC")
    ax.legend(loc="lower right")


def _pr(ax, data: dict) -> None:
    pr = data["curves"]["pr"]
    ax.plot(pr["recall"], pr["precision"], label=f"AP {_num(data['overall']['ap'])}")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall", ylim=(0, 1.02))
    ax.legend(loc="lower left")


def _reliability(ax, data: dict) -> None:
    rel = data["reliability"]
    ax.plot([0, 1], [0, 1], ls=":", color="grey", label="perfect calibration")
    ax.plot(rel["confidence"], rel["frequency"], marker="o", label=f"model (ECE {_num(data['overall']['ece'])})")
    ax.set(xlabel="mean predicted P(ai)", ylabel="observed share of ai", title="Reliability", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")


def _histogram(ax, data: dict) -> None:
    for label, color in (("real", "tab:blue"), ("ai", "tab:red")):
        values = [s["probability"] for s in data["scores"] if s["label"] == label]
        if values:
            ax.hist(values, bins=20, range=(0, 1), alpha=0.6, color=color, label=f"{label} ({len(values)})")
    ax.axvspan(*data["band"], color="grey", alpha=0.15, label="uncertain band")
    ax.axvline(data["threshold"], color="black", lw=1)
    ax.set(xlabel="P(ai)", ylabel="images", title="Scores by label")
    ax.legend()


def _robustness(ax, rows: list[dict]) -> None:
    ax.barh([r["perturbation"] for r in rows][::-1], [r["auc"] or 0.0 for r in rows][::-1])
    ax.axvline(0.5, color="grey", ls=":")
    ax.set(xlabel="ROC AUC (chance = 0.5)", xlim=(0, 1), title="AUC per perturbation")


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure_tag(title: str, src: str) -> str:
    return f"<figure><img src='{src}' alt='{_e(title)}'><figcaption>{_e(title)}</figcaption></figure>"


def _num(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return _e(value)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)
