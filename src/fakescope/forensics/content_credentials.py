"""C2PA content credentials: read and validate an embedded manifest store with c2pa-python.

A manifest declares AI generation through an action whose `digitalSourceType` is
`trainedAlgorithmicMedia` (on the `c2pa.created` action: the whole image; on an edit, or beside a
created capture: part of it) or `compositeWithTrainedAlgorithmicMedia` (part of it).
The image's own lineage is the active manifest and its `parentOf` ancestors (ChatGPT signs an
`opened` action over a parent that was `created` by the model); a generated ingredient placed
into the image (`componentOf`) or fed to an action (`inputTo`) makes it partly generated at most,
and a capture term counts only from the lineage. Validation is split in two:

- integrity: the claim signature verifies and every hash matches the bytes, in the active manifest
  and in every ingredient manifest;
- credential: whether the signing certificate chains to a configured trust anchor and is in
  date. Offline there is no trust list, so real signers come out `untrusted` (and old
  certificates `expired`); c2pa reports those as `Invalid` although nothing was tampered with.

`failure_kind` sorts the failure codes: trust and time-stamp problems (`TRUST_CODES`, any
`timeStamp.*`) leave the manifest scoring; a revoked signing certificate (`REVOKED_CODES`) and every
other code (hash or signature mismatches, malformed or missing parts, codes unknown here) make it
ignored, whatever it declares, and reported. The credential state is reported, never hidden.
"""

from __future__ import annotations

import functools
import io
import json
import os
from pathlib import Path
from typing import Any

from fakescope.detection import Evidence
from fakescope.errors import ConfigError
from fakescope.forensics._source_types import (
    AI_COMPOSITE,
    AI_GENERATED,
    CAPTURE,
    source_term,
)
from fakescope.forensics._text import one_line
from fakescope.io import jpeg_markers
from fakescope.io.image import sniff_format

KIND = "c2pa"
TRUST_ANCHORS_ENV = "FAKESCOPE_C2PA_TRUST_ANCHORS"
"""Path of a PEM bundle of trusted root certificates (e.g. the C2PA trust list); unset: none."""

SCORE_AI_TRUSTED = 0.999
SCORE_AI_UNTRUSTED = 0.99
SCORE_AI_COMPOSITE = 0.95
SCORE_CAPTURE_TRUSTED = 0.05
SCORE_CAPTURE_UNTRUSTED = 0.3

TRUST_CODES = frozenset({
    "signingCredential.untrusted", "signingCredential.expired", "signingCredential.invalid",
    "signingCredential.ocsp.skipped", "signingCredential.ocsp.inaccessible", "signingCredential.ocsp.unknown",
    "claimSignature.outsideValidity", "timeOfSigning.outsideValidity", "algorithm.deprecated",
})
"""Failure codes about who signed and when (with every `timeStamp.*` code), not whether the content was altered."""
REVOKED_CODES = frozenset({"signingCredential.ocsp.revoked", "signingCredential.revoked"})
"""The issuer withdrew the signing certificate (its key may be in other hands): the signature vouches for nothing."""
NOT_REVOKED_CODES = frozenset({"signingCredential.ocsp.notRevoked", "signingCredential.notRevoked"})
"""An OCSP response embedded in the manifest says the signing certificate was not revoked (none is ever fetched)."""
NO_OCSP = "revocation not checked (no OCSP response embedded; none is fetched)"
TRUST, REVOKED, INTEGRITY = "trust", "revoked", "integrity"
MAX_REPORTED_ACTIONS = 16

_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "TIFF": "image/tiff",
         "HEIF": "image/heif", "AVIF": "image/avif", "GIF": "image/gif", "BMP": "image/bmp"}


def has_jumbf(data: bytes) -> bool:
    """Cheap pre-check: every embedded C2PA store is a raw JUMBF box labelled `c2pa`.

    JPEG (APP11), PNG (caBX), WebP, GIF, TIFF and BMFF containers all carry the box
    uncompressed, so bytes without both markers hold no embedded manifest. A JPEG keeps it in
    APP11 segments before the image data, so only its header is searched (unless its segments
    cannot be walked): 7 instead of 94 us for a 176 KB JPEG.
    """
    if sniff_format(data) == "JPEG" and (end := jpeg_markers.header_end(data)) is not None:
        data = data[:end]
    return b"jumb" in data and b"c2pa" in data


def check_c2pa(data: bytes | None, *, trust_anchors: str | None = None) -> Evidence:
    """Read and validate the embedded C2PA manifest store of encoded image bytes.

    Args:
        data: the original file bytes (None when only pixels are known).
        trust_anchors: PEM root certificates to trust; default: the file named by
            `FAKESCOPE_C2PA_TRUST_ANCHORS`, else none (every signer is `untrusted`).

    Returns:
        Evidence of kind `c2pa`. `score` is P(ai) implied by an intact manifest, else None
        (a manifest that fails validation scores nothing); `decisive` is True for an intact
        manifest that declares AI generation;
        `data` holds claim_generator, signer, validation_state, integrity, revoked, ignored (True where a
        failure is not a trust problem, see `failure_kind`), trusted, revocation_checked (an embedded OCSP response
        says the certificate was not revoked), failures, digital_source_type,
        generated (`whole` or `part` for AI) and actions.
        Unreadable stores give `error`.

    Example:
        >>> check_c2pa(b"not a signed image").detail
        'no embedded C2PA manifest'
    """
    if not data:
        return Evidence(KIND, None, "no encoded bytes to read a manifest from")
    if not has_jumbf(data):
        return Evidence(KIND, None, "no embedded C2PA manifest", data={"present": False})
    import c2pa

    try:
        context = _context(trust_anchors if trust_anchors is not None else trust_anchors_from_env())
        reader = c2pa.Reader.try_create(_MIME.get(sniff_format(data) or ""), io.BytesIO(data), None, context)
        if reader is None:
            return Evidence(KIND, None, "no embedded C2PA manifest", data={"present": False})
        with reader:
            store = json.loads(reader.json())
            state = reader.get_validation_state()
            results = reader.get_validation_results() or {}
    except (c2pa.C2paError, ConfigError, ValueError) as exc:
        return Evidence(KIND, None, "C2PA data present but unreadable", data={"present": True},
                        error=f"{type(exc).__name__.lstrip('_')}: {exc}")
    return _evidence_from_store(store, state, results)


def failure_kind(code: str) -> str:
    """`trust` (who signed or when: the content still verifies), `revoked` or `integrity` (anything else) for a code."""
    if code in TRUST_CODES or code.startswith("timeStamp."):
        return TRUST
    return REVOKED if code in REVOKED_CODES else INTEGRITY


def _evidence_from_store(store: dict[str, Any], state: str | None, results: dict[str, Any]) -> Evidence:
    manifests = store.get("manifests") or {}
    active = manifests.get(store.get("active_manifest"), {})
    failures = _failure_codes(store, results)
    broken = sorted(c for c in set(failures) if failure_kind(c) != TRUST)
    trusted = state == "Trusted"
    checked = bool(NOT_REVOKED_CODES & set(_success_codes(results)))
    lineage = _lineage(manifests, store.get("active_manifest"))
    own = [a for label in lineage for a in _actions(manifests[label])]
    # the other manifests by label: c2pa lists them in an order that changes from one process to the next
    actions = own + [a for label, m in sorted(manifests.items()) if label not in lineage for a in _actions(m)]
    terms = {term for _, term, _ in own if term}
    origin = {term for action, term, _ in own if action == "c2pa.created" and term}
    placed = {term for _, term, _ in actions[len(own):] if term} & (AI_GENERATED | AI_COMPOSITE)
    info = {
        "present": True,
        "claim_generator": _claim_generator(active),
        "signer": _signer(active),
        "validation_state": state,
        "integrity": "broken" if any(failure_kind(c) == INTEGRITY for c in broken) else "intact",
        "revoked": any(failure_kind(c) == REVOKED for c in broken),
        "ignored": bool(broken),
        "trusted": trusted,
        "revocation_checked": checked,
        "failures": sorted(set(failures)),
        "actions": [{"action": a, "digital_source_type": t, "software_agent": s}
                    for a, t, s in actions[:MAX_REPORTED_ACTIONS]],
    }
    credential = _credential_text(trusted, failures, checked)
    who = f"claim generator {info['claim_generator'] or 'unknown'}, signer {info['signer'] or 'unknown'}"
    ai_terms = terms & (AI_GENERATED | AI_COMPOSITE)
    if ai_terms or placed:
        term = min(ai_terms & AI_GENERATED or ai_terms or placed)
        whole = bool(origin & AI_GENERATED) and not origin & CAPTURE  # the model made it, not an edit of a capture
        info["digital_source_type"], info["generated"] = term, "whole" if whole else "part"
        agent = next((s for _, t, s in actions if t == term and s), None)
        made = (f"C2PA manifest lists an ingredient declaring {term} (placed in or used to make the image: "
                f"partly generated)" if not ai_terms else f"C2PA manifest declares {term}" + (
                "" if whole or term in AI_COMPOSITE else " (not as the image's sole origin: partly generated)"))
        made += f" (software agent {agent})" if agent else ""
        if broken:
            return _ignored(made, broken, who, info)
        score = SCORE_AI_COMPOSITE if info["generated"] == "part" else (
            SCORE_AI_TRUSTED if trusted else SCORE_AI_UNTRUSTED)
        return Evidence(KIND, score, f"signed {made}; signature and hashes verify; {credential}; {who}",
                        decisive=True, data=info)
    capture = sorted(terms & CAPTURE)
    if capture:
        info["digital_source_type"] = capture[0]
        if broken:
            return _ignored(f"C2PA manifest declares {capture[0]}", broken, who, info)
        score = SCORE_CAPTURE_TRUSTED if trusted else SCORE_CAPTURE_UNTRUSTED
        return Evidence(KIND, score, f"signed C2PA manifest declares {capture[0]}; {credential}; {who}", data=info)
    integrity = f"validation failed ({', '.join(broken)}); ignored" if broken else "signature and hashes verify"
    other = sorted(terms)
    if other:
        info["digital_source_type"] = other[0]
    declared = f"declares {', '.join(other)} (neither generated nor a capture)" if other else "declares no digital source type"
    return Evidence(KIND, None, f"C2PA manifest {declared}; {integrity}; {who}", data=info)


def _ignored(made: str, broken: list[str], who: str, info: dict[str, Any]) -> Evidence:
    """A manifest that fails validation vouches for nothing: copied from another image, altered since signing, or
    signed with a revoked certificate."""
    why = "copied from another file, or altered since signing" if info["integrity"] == "broken" else (
        "its signing certificate was revoked")
    return Evidence(KIND, None, f"{made}, but validation failed ({', '.join(broken)}): the manifest does not "
                    f"vouch for these bytes ({why}); ignored; {who}", data=info)


def _lineage(manifests: dict[str, Any], label: str | None) -> list[str]:
    """The active manifest's label, then its `parentOf` ancestors': the manifests of the image itself."""
    labels: list[str] = []
    while label in manifests and label not in labels:
        labels.append(label)
        label = next((i.get("active_manifest") for i in manifests[label].get("ingredients") or []
                      if i.get("relationship") == "parentOf"), None)
    return labels


def _failure_codes(store: dict[str, Any], results: dict[str, Any]) -> list[str]:
    """Failures of the active manifest and of every ingredient's (a tampered parent breaks the image's lineage)."""
    active = results.get("activeManifest")
    if isinstance(active, dict):
        deltas = [d.get("validationDeltas") or {} for d in results.get("ingredientDeltas") or []]
        return [f.get("code", "") for part in (active, *deltas) for f in part.get("failure", [])]
    return [s.get("code", "") for s in store.get("validation_status", [])]


def _success_codes(results: dict[str, Any]) -> list[str]:
    """The active manifest's success codes (where an embedded OCSP response shows it was not revoked)."""
    active = results.get("activeManifest")
    return [s.get("code", "") for s in active.get("success") or []] if isinstance(active, dict) else []


def _actions(manifest: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
    found = []
    for assertion in manifest.get("assertions", []):
        if not str(assertion.get("label", "")).startswith("c2pa.actions"):
            continue
        for action in (assertion.get("data") or {}).get("actions", []):
            agent = action.get("softwareAgent")
            agent_name = agent.get("name") if isinstance(agent, dict) else agent
            term = source_term(action.get("digitalSourceType"))
            found.append((one_line(str(action.get("action"))), one_line(term) if term else None,
                          one_line(str(agent_name)) if agent_name else None))
    return found


def _claim_generator(manifest: dict[str, Any]) -> str | None:
    if manifest.get("claim_generator"):
        return one_line(str(manifest["claim_generator"]))
    names = [" ".join(str(i[k]) for k in ("name", "version") if i.get(k))
             for i in manifest.get("claim_generator_info", []) if isinstance(i, dict)]
    return one_line(", ".join(n for n in names if n)) or None


def _signer(manifest: dict[str, Any]) -> str | None:
    sig = manifest.get("signature_info") or {}
    parts = [str(sig[k]) for k in ("issuer", "common_name") if sig.get(k)]
    return one_line(" / ".join(parts)) or None


def _credential_text(trusted: bool, failures: list[str], revocation_checked: bool) -> str:
    notes = ["signer trusted (chains to a configured trust anchor)" if trusted else "signer not on a configured trust list"]
    if not revocation_checked:
        notes.append(NO_OCSP)
    if "signingCredential.expired" in failures:
        notes.append("certificate expired")
    other = sorted({c for c in failures if failure_kind(c) == TRUST}
                   - {"signingCredential.untrusted", "signingCredential.expired"})
    if other:
        notes.append(f"unverified: {', '.join(other)}")
    return ", ".join(notes)


def trust_anchors_from_env() -> str:
    """The PEM bundle `FAKESCOPE_C2PA_TRUST_ANCHORS` names ('' when unset).

    Raises:
        ConfigError: the variable names a file that cannot be read or holds no PEM certificate.
    """
    path = os.environ.get(TRUST_ANCHORS_ENV)
    if not path:
        return ""
    try:
        text = Path(path).read_bytes().decode("utf-8", "replace")
    except OSError as exc:
        raise ConfigError(f"{TRUST_ANCHORS_ENV}={path}: {exc.strerror or exc}") from None
    if "-----BEGIN CERTIFICATE-----" not in text:  # else c2pa fails on every signed image instead
        raise ConfigError(f"{TRUST_ANCHORS_ENV}={path}: no PEM certificate (-----BEGIN CERTIFICATE-----) in the file")
    return text


@functools.cache  # never evicted: a dropped context frees its native handle, which a reader in another thread may be using
def _context(trust_anchors: str):
    """A reader context that never touches the network; trusts `trust_anchors` if given (one per trust list)."""
    import c2pa

    settings: dict[str, Any] = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}
    if trust_anchors:
        settings["trust"] = {"trust_anchors": trust_anchors}
    return c2pa.Context.from_dict(settings)
