"""Build a tiny, randomly initialised XTTS-v2 model directory: ``python tests/tiny_xtts.py DIR``.

Run inside the xtts engine environment (it needs ``coqui-tts``, ``torch`` and ``tokenizers``). The
directory holds exactly what the real loader reads, as the published XTTS-v2 does:

- ``config.json``: an ``XttsConfig`` (the library's defaults, the 17 languages) with a small
  ``model_args`` (one GPT layer of 32 channels, at most 24 audio tokens, the perceiver resampler on);
- ``model.pth``: ``{"model": state_dict}`` of ``Xtts.init_from_config(config)``, random weights;
- ``vocab.json``: a ``tokenizers`` BPE tokenizer whose special tokens are XTTS's (``[STOP]``,
  ``[UNK]``, ``[SPACE]``, ``[START]`` and one per language, ``[en]``...).

So that it goes through ``XttsConfig.load_json`` + ``Xtts.init_from_config`` + ``load_checkpoint``
unchanged. Random weights never emit the stop token: generation runs to its cap every time.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

LANGUAGES = ["en", "es", "fr", "de", "it", "pt", "pl", "tr", "ru", "nl", "cs", "ar", "zh-cn", "hu", "ko", "ja", "hi"]
SPECIAL_TOKENS = ["[STOP]", "[UNK]", "[SPACE]", "[START]", *(f"[{lang}]" for lang in LANGUAGES)]
MODEL_ARGS: dict[str, Any] = {
    "gpt_layers": 1,
    "gpt_n_model_channels": 32,
    "gpt_n_heads": 2,
    "decoder_input_dim": 32,
    "gpt_max_audio_tokens": 24,
    "gpt_use_perceiver_resampler": True,
}
CORPUS = [
    "the quick brown fox jumps over the lazy dog.",
    "when the sunlight strikes raindrops in the air, they act as a prism and form a rainbow.",
    "hello, this is a tiny model that says nothing at all; it is only random weights!",
    "abcdefghijklmnopqrstuvwxyz 0123456789 .,;:!?'\"-()",
]


def build_vocab(path: Path) -> None:
    tokenizers: Any = importlib.import_module("tokenizers")
    models: Any = importlib.import_module("tokenizers.models")
    pre_tokenizers: Any = importlib.import_module("tokenizers.pre_tokenizers")
    trainers: Any = importlib.import_module("tokenizers.trainers")
    tokenizer = tokenizers.Tokenizer(models.BPE(unk_token="[UNK]"))
    # XTTS replaces spaces by [SPACE] before encoding: split on it and on punctuation only.
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=256, special_tokens=SPECIAL_TOKENS, show_progress=False)
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    tokenizer.save(str(path))


def build(directory: Path, seed: int = 0) -> None:
    torch: Any = importlib.import_module("torch")
    configs: Any = importlib.import_module("TTS.tts.configs.xtts_config")
    models: Any = importlib.import_module("TTS.tts.models.xtts")
    directory.mkdir(parents=True, exist_ok=True)
    build_vocab(directory / "vocab.json")

    config = configs.XttsConfig()
    config.languages = list(LANGUAGES)
    for name, value in MODEL_ARGS.items():
        setattr(config.model_args, name, value)
    config.model_args.tokenizer_file = ""  # the loader takes vocab.json beside model.pth
    (directory / "config.json").write_text(json.dumps(config.to_dict(), indent=2), encoding="utf-8")

    torch.manual_seed(seed)
    config = configs.XttsConfig()
    config.load_json(str(directory / "config.json"))  # what the loader will read
    model = models.Xtts(config)
    # init_from_config builds no GPT without a tokenizer: load it as load_checkpoint will.
    model.tokenizer = importlib.import_module("TTS.tts.layers.xtts.tokenizer").VoiceBpeTokenizer(
        vocab_file=str(directory / "vocab.json")
    )
    model.init_models()
    torch.save({"model": model.state_dict()}, directory / "model.pth")


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python tests/tiny_xtts.py DIR")
    build(Path(sys.argv[1]))
    print(f"tiny XTTS model written to {sys.argv[1]}")


if __name__ == "__main__":
    main()
