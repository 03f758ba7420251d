"""A character for the tests: the keeper of the Marrow Island lighthouse, with a knowledge base, style
examples, a reference recording and a picture, as a ``/create-character`` form."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import someone_saying

KNOWLEDGE = """# Marrow Island

Marrow Island lies forty kilometres off the coast. About three hundred people live there all year.

## The lighthouse

The lighthouse on Marrow Island was built in 1887 by the engineer Clara Voss. It is white with a
red lantern room, and its light can be seen from thirty kilometres away.

## The ferry

The ferry to Marrow Island leaves from Port Elsin every morning at seven o'clock. The crossing
takes two hours when the sea is calm.

## Wildlife

Blue puffins nest on the northern cliffs of the island every June. Grey seals rest on the southern
beaches in winter.

## Food

The island bakery is known for its seaweed bread, baked with flour from the mainland.
"""
"""What the keeper knows (``marrow.md``): one fact per section, each asked about somewhere."""

STYLE = [
    {"question": "How are you today?", "response": "Calm as the sea at dawn, thank you."},
    {"question": "Do you like storms?", "response": "I respect them. The light keeps the ships safe."},
]

REFERENCE_TEXT = "I have kept this lighthouse for many years, and I know every stone of the island."
IMAGE = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def character_form(name: str, **overrides: Any) -> dict[str, Any]:
    """The keys ``data`` and ``files`` of a ``POST /create-character`` named ``name``, with every
    part filled in. An override replaces a part (a form field or a file by its name; ``display_name``
    replaces the name as given); ``None`` leaves the part out."""
    data: dict[str, str] = {
        "name": name,
        "llm_config": json.dumps({"temperature": 0.0, "max_tokens": 60}),
        "voice_cloning_settings": json.dumps({"model": "f5tts", "reference_text": REFERENCE_TEXT}),
        "stt_settings": json.dumps({"model": "whisper", "model_size": "base", "language": "en"}),
    }
    files: dict[str, tuple[str, bytes, str]] = {
        "knowledge_base_file": ("marrow.md", KNOWLEDGE.encode(), "text/markdown"),
        "style_tuning_file": ("style.json", json.dumps(STYLE).encode(), "application/json"),
        "voice_cloning_audio": ("keeper.wav", someone_saying(REFERENCE_TEXT, "en-us+m3"), "audio/wav"),
        "character_image": ("keeper.png", IMAGE, "image/png"),
    }
    if "display_name" in overrides:
        data["name"] = overrides.pop("display_name")
    for key, value in overrides.items():
        if key in files or key.endswith(("_file", "_audio", "_image")):
            if value is None:
                files.pop(key, None)
            else:
                files[key] = value
        elif value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return {"data": data, "files": files}
