"""The marks generators leave in unsigned metadata, in one table: where each is found, what it says, who wrote it.

A field is a kind of place in the file (see `Sign`) and its value. Only a row's match declares AI: editors, phone camera
apps, people's names and captions never do (a caption mentioning Midjourney is not Midjourney's mark). Rows are in
priority order: the first generator matched names the image (Fooocus before the A1111 syntax it also writes).
"""

from __future__ import annotations

import re
from typing import NamedTuple

A1111_PARAMETERS = re.compile(r"\bSteps: \d+, Sampler: ")
"""The generation-parameters line of the Stable Diffusion web UI and its forks (Forge, SD.Next) and of Fooocus' A1111
scheme."""
_A1111 = "Stable Diffusion web UI (A1111/Forge/SD.Next)"


class Sign(NamedTuple):
    """A generator's mark: the field it is in, a pattern the value must contain (None: any value), the generator.

    Fields: `chunk:KEY` a PNG text chunk (tEXt, zTXt, iTXt) by key; `software` EXIF Software, XMP CreatorTool, IPTC-IIM
    Originating Program, PNG Software and Source chunks; `comment` EXIF UserComment, a JPEG comment, PNG comment,
    Comment and Description chunks; `description` EXIF ImageDescription, XMP dc:description, IPTC-IIM Caption and
    Object Name, a PNG Description chunk; `credit` XMP photoshop:Credit and IPTC-IIM Credit (the IPTC Credit Line),
    IPTC-IIM By-line; `exif-tag` EXIF Make, Model and ImageDescription, where ComfyUI's WebP and
    animated savers write `prompt:{json}` and `workflow:{json}`.
    """

    field: str
    pattern: re.Pattern[str] | None
    generator: str


def _name(pattern: str) -> re.Pattern[str]:
    return re.compile(rf"\b(?:{pattern})\b", re.IGNORECASE)


SIGNS: tuple[Sign, ...] = (
    Sign("chunk:fooocus_scheme", None, "Fooocus"),
    Sign("chunk:parameters", re.compile(r"\bFooocus v\d"), "Fooocus"),
    Sign("chunk:parameters", re.compile(r'"sui_image_params"\s*:'), "SwarmUI"),
    Sign("chunk:sui_image_params", None, "SwarmUI"),
    Sign("chunk:parameters", A1111_PARAMETERS, _A1111),
    Sign("chunk:prompt", re.compile(r'"class_type"\s*:'), "ComfyUI"),
    Sign("chunk:workflow", re.compile(r'"nodes"\s*:'), "ComfyUI"),
    Sign("exif-tag", re.compile(r'(?s)\A(?:prompt:.*"class_type"|workflow:.*"nodes")\s*:'), "ComfyUI"),
    *(Sign(f"chunk:{key}", None, "InvokeAI") for key in ("invokeai_metadata", "invokeai_graph", "sd-metadata", "Dream")),
    Sign("chunk:Comment", re.compile(r'(?s)\A\s*\{(?=.*"uc"\s*:)(?=.*"sampler"\s*:)(?=.*"steps"\s*:)'), "NovelAI"),
    # Midjourney writes the prompt and its job's UUID as the description (PNG `Description`, XMP dc:description) beside
    # IPTC trainedAlgorithmicMedia, which it adopted with Google and Shutterstock in May 2023
    # (https://iptc.org/news/tag/google-images/).
    Sign("description", re.compile(r"\bJob ID: [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "Midjourney"),
    # Google's credit line: "Edited with Google AI" (Google Photos' Magic Editor, Magic Eraser, Zoom Enhance; Google's
    # post of 24 Oct 2024, https://www.fonearena.com/blog/438871/google-photos-ai-metadata-edited-photos.html) and
    # "Made with Google AI" beside trainedAlgorithmicMedia on Gemini/Imagen output (no Google page found for this one;
    # third-party metadata readers report it).
    Sign("credit", re.compile(r"\b(?:Made|Edited) with Google AI\b", re.IGNORECASE), "Google"),
    # Meta AI has no row: its images carry IPTC trainedAlgorithmicMedia and an invisible watermark, no documented name
    # (https://iptc.org/news/meta-announces-support-for-iptc-metadata-in-generative-ai-images/); "Imagined with AI" is
    # the label its apps show, not metadata; and "Meta AI" is also the app (formerly Meta View) that imports Ray-Ban Meta
    # glasses' photos (https://davidzucker.substack.com/p/a-second-meta-app-has-hit-the-app, quoting its store page).
    # The names in Software below are no documented mark (none found for Midjourney or Google): kept, as a Software
    # field naming a generator is written by that generator or someone claiming it.
    Sign("software", _name("midjourney"), "Midjourney"),
    Sign("software", _name(r"fooocus"), "Fooocus"),
    Sign("software", _name(r"novelai"), "NovelAI"),
    Sign("software", _name(r"comfyui"), "ComfyUI"),
    Sign("software", _name(r"invokeai"), "InvokeAI"),
    Sign("software", _name(r"automatic1111|stable[\s_-]diffusion[\s_-]web[\s_-]?ui|sd\.next"), _A1111),  # its repo's name too
    Sign("software", _name(r"adobe firefly"), "Adobe Firefly"),
    # DALL·E Mini (and Mega) is Boris Dayma's open model, not OpenAI's, renamed Craiyon at OpenAI's request in June 2022
    # (https://github.com/borisdayma/dalle-mini); min-dalle is a port of its weights (https://github.com/kuprel/min-dalle)
    Sign("software", _name(r"craiyon|dall[\s·\-]e[\s_-]?m(?:ini|ega)|dalle[_-]m(?:ini|ega)|(?-i:DALLE) ?m(?:ini|ega)|"
                           r"min[_-]dalle"), "Craiyon (DALL-E Mini)"),
    # `dalle` alone is Italian ("from the"; the Dalle Molle institutes) and `imagen` Spanish ("image": "Visor de imagen 2"):
    # the joined name counts only in capitals or with a version, Imagen only after Google
    Sign("software", _name(r"dall[\s·\-]e(?: ?\d)?|(?-i:DALLE)|dalle-?\d|chatgpt|gpt-4o|gpt-image-\d"), "OpenAI DALL-E/ChatGPT"),
    Sign("software", _name(r"google imagen|google gemini"), "Google"),
    Sign("software", _name(r"stable[\s_-]?diffusion|sdxl|dreamstudio"), "Stable Diffusion"),
    # Black Forest Labs' names as its model cards, checkpoints and API write them: FLUX.1 [dev], FLUX.1-dev, flux1-schnell,
    # FLUX1.1 [pro], flux-pro-1.1-ultra, flux-kontext-max; FLUX.2 [dev], flux2-dev, flux-2-pro. `Flux` alone, before a
    # space or in a longer version (flux-2.0.1) names other apps and libraries
    Sign("software", _name(r"flux\.?1(?:\.1)?(?!\.\d)|flux-(?:dev|schnell|pro(?:-1\.1(?:-ultra)?)?|kontext-(?:dev|pro|max))"),
         "FLUX.1"),
    Sign("software", _name(r"flux[.-]?2(?!\.\d)"), "FLUX.2"),
    Sign("software", _name(r"leonardo\.ai"), "Leonardo.Ai"),
    # `ideogram` is an English word (a CJK character tool, a font editor): its site's name anywhere, else the whole value
    # with at most a version and a model word ("Ideogram 3.0 Turbo")
    Sign("software", re.compile(r"\bideogram\.ai\b|\A\s*ideogram(?:\s+v?\d[\w.]*(?:\s+\w+)?)?\s*\Z", re.IGNORECASE),
         "Ideogram"),
    Sign("software", _name(r"bing image creator"), "Bing Image Creator"),
    Sign("software", _name(r"nightcafe"), "NightCafe"),
    Sign("comment", A1111_PARAMETERS, _A1111),
)
"""Every generator mark read, in priority order."""


def recognise(fields: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """(field, where, generator) for each field that carries a generator's mark, in `SIGNS` order, each place once.

    Args:
        fields: (field kind, as `Sign` lists them; where it was found, named in the reason; value).
    """
    found: dict[str, tuple[str, str, str]] = {}
    for sign in SIGNS:
        for field, where, value in fields:
            if field == sign.field and where not in found and (sign.pattern is None or sign.pattern.search(value)):
                found[where] = (field, where, sign.generator)
    return list(found.values())
