"""``POST /v1/audio/dialogue``: several voices in one recording."""

from __future__ import annotations

import base64
import json
from typing import Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response, StreamingResponse

from parla.api.auth import SPEAK
from parla.api.deps import DialogueDep
from parla.api.streams import started
from parla.audio.encode import CONTENT_TYPES
from parla.offload import offload
from parla.services.dialogue import DialogueRequest
from parla.services.speech import ignored_header

router = APIRouter(tags=["Dialogue"])


@router.post("/v1/audio/dialogue", summary="Speak a dialogue between voices", dependencies=[SPEAK])
async def create_dialogue(
    body: DialogueRequest,
    dialogue: DialogueDep,
    stream: bool = Query(False, description="Stream the audio turn by turn (the turn times are then in the history)."),
    output: Literal["audio", "json"] = Query("audio", description="audio: the file, turn times in X-Turns; json: both"),
) -> Response:
    plan = await offload(dialogue.prepare, body)
    headers = {"X-Generation-Id": plan.record.id, "X-Seed": str(plan.record.seed), **ignored_header(plan.ignored)}
    media_type = CONTENT_TYPES[body.response_format]
    if stream:
        return StreamingResponse(await started(dialogue.stream(plan)), media_type=media_type, headers=headers)
    rendered = await dialogue.render(plan)
    if output == "json":
        return JSONResponse(
            {
                "generation_id": plan.record.id,
                "format": body.response_format,
                "duration": round(rendered.duration, 3),
                "turns": plan.timings,
                "audio": base64.b64encode(rendered.audio).decode(),
            }
        )
    return Response(rendered.audio, media_type=media_type, headers={**headers, "X-Turns": json.dumps(plan.timings)})
