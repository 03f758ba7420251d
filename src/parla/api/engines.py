"""``GET /v1/engines``: every engine known here, with what an operator needs to run it.

``/health`` says whether the server can speak; this says, per engine (built-in, heavy or plugin),
whether it can and why not, where it runs (in this process, a configured worker, a worker this
server supervises), its environment, its weights (where they were found, or the directory and file
names expected), its device, whether its model is loaded, and its memory (a worker's resident
memory, and the GPU memory torch reports). The same facts as ``parla engines``
(``parla.engines.inventory``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from parla.api.auth import SPEAK
from parla.api.deps import EnginesDep, SettingsDep
from parla.engines.inventory import survey
from parla.offload import offload

router = APIRouter(tags=["Engines"])


@router.get(
    "/v1/engines",
    summary="Every engine: installed, weights, where it runs, device, loaded, memory",
    dependencies=[SPEAK],
)
async def list_engines(request: Request, settings: SettingsDep, engines: EnginesDep) -> dict[str, Any]:
    # Off the event loop: the survey reads the disk and asks each worker for its memory.
    supervisor = getattr(request.app.state, "supervisor", None)
    facts = await offload(survey, settings, engines, supervisor)
    return {"engines": [fact.describe() for fact in facts]}
