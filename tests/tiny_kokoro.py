"""Build a tiny, randomly initialised Kokoro model directory: ``python tests/tiny_kokoro.py DIR CONFIG``.

Run inside the kokoro engine environment (it needs ``kokoro`` and ``torch``). ``CONFIG`` is a real
Kokoro v1.0 ``config.json`` (kokoro-onnx ships one: the same vocabulary and architecture), whose
sizes are shrunk here; the directory then holds exactly what ``KModel(config=..., model=...)`` reads,
as ``hexgrad/Kokoro-82M`` does:

- ``config.json``: the real vocabulary, a one-layer PL-BERT of 32 channels, one-layer prosody and
  text encoders, at most ``MAX_DUR`` frames a phoneme; what the code fixes stays as it is (the
  style size, 128: KModel slices its 256-wide style vectors in halves; the hidden size, 512, which the
  decoder's residual convolution takes; the decoder, its upsampling to 24 kHz);
- ``kokoro-v1_0.pth``: the five parts' state dicts (``bert``, ``bert_encoder``, ``predictor``,
  ``text_encoder``, ``decoder``), random, written by ``KModel`` itself;
- ``voices/af_tiny.pt``, ``voices/am_tiny.pt``: ``[510, 1, 256]`` style tables, random.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

MAX_DUR = 6
"""Frames (600 samples, 25 ms at 24 kHz) a phoneme lasts at most: random weights speak about half of it."""


def main(out: Path, config_source: Path) -> None:
    torch: Any = importlib.import_module("torch")
    KModel: Any = importlib.import_module("kokoro.model").KModel

    config = json.loads(config_source.read_text(encoding="utf-8"))
    config["plbert"] = {
        "hidden_size": 32,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 512,
        "num_hidden_layers": 1,
        "dropout": 0.1,
    }
    # hidden_dim and the generator's 512 channels stay: the decoder's own layers are fixed at 512.
    config.update(n_layer=1, max_dur=MAX_DUR)
    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps(config, ensure_ascii=False, indent=1), encoding="utf-8")

    torch.manual_seed(0)
    empty = out / "empty.pth"
    torch.save({}, empty)  # KModel builds its parts from the config, then loads these (none): random weights
    model = KModel(repo_id="hexgrad/Kokoro-82M", config=str(out / "config.json"), model=str(empty))
    empty.unlink()
    parts = ("bert", "bert_encoder", "predictor", "text_encoder", "decoder")
    torch.save({part: getattr(model, part).state_dict() for part in parts}, out / "kokoro-v1_0.pth")

    (out / "voices").mkdir()
    for seed, name in enumerate(("af_tiny", "am_tiny"), start=1):
        generator = torch.Generator().manual_seed(seed)
        torch.save(torch.randn(510, 1, 256, generator=generator) * 0.2, out / "voices" / f"{name}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
