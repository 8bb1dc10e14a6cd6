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
    Sign("description", re.compile(r"\bJob ID: [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "Midjourney"),
    Sign("credit", re.compile(r"\b(?:Made|Edited) with Google AI\b", re.IGNORECASE), "Google"),
    Sign("credit", _name(r"meta ai"), "Meta AI"),
    Sign("software", _name("midjourney"), "Midjourney"),
    Sign("software", _name(r"fooocus"), "Fooocus"),
    Sign("software", _name(r"novelai"), "NovelAI"),
    Sign("software", _name(r"comfyui"), "ComfyUI"),
    Sign("software", _name(r"invokeai"), "InvokeAI"),
    Sign("software", _name(r"automatic1111|stable diffusion web ?ui|sd\.next"), _A1111),
    Sign("software", _name(r"adobe firefly"), "Adobe Firefly"),
    Sign("software", _name(r"dall[\s·\-]?e(?: ?\d)?|chatgpt|gpt-4o|gpt-image-\d"), "OpenAI DALL-E/ChatGPT"),
    Sign("software", _name(r"google imagen|imagen \d|google gemini"), "Google"),
    Sign("software", _name(r"meta ai|imagine with meta"), "Meta AI"),
    Sign("software", _name(r"stable[\s_-]?diffusion|sdxl|dreamstudio"), "Stable Diffusion"),
    Sign("software", _name(r"flux\.1"), "FLUX.1"),
    Sign("software", _name(r"leonardo\.ai"), "Leonardo.Ai"),
    Sign("software", _name(r"ideogram"), "Ideogram"),
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
