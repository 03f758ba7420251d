"""Build a tiny, randomly initialised Chatterbox model directory: ``python tests/tiny_chatterbox.py DIR``.

Run inside the chatterbox engine environment (it needs ``chatterbox-tts``, ``torch``, ``safetensors``
and ``tokenizers``). The directory holds exactly what ``ChatterboxTTS.from_local`` reads, as the
published ``ResembleAI/chatterbox`` does:

- ``ve.safetensors``: the voice encoder's ``state_dict``, random;
- ``t3_cfg.safetensors``: T3's, built from ``LLAMA_CONFIGS["Llama_520M"]`` with one Llama layer and a
  small MLP (its width stays 1024: T3's perceiver resampler is built for 1024 channels whatever the
  config says), random; Parla's engine reads these sizes from the file's shapes;
- ``s3gen.safetensors``: S3Gen's (its speech tokenizer, flow decoder and vocoder), random and of the
  published size, which its constructor fixes (about 1 GB);
- ``tokenizer.json``: a ``tokenizers`` BPE tokenizer with Chatterbox's special tokens (``[START]``,
  ``[STOP]``, ``[UNK]``, ``[SPACE]``...), its ids below T3's 704 text tokens;
- ``conds.pt``: the default voice, ``prepare_conditionals`` of a synthetic second of "speech" through
  the model just written, loaded back by ``from_local`` as the published one is.

Random weights never emit the stop token: generation runs to its cap every time.
"""

from __future__ import annotations

import importlib
import io
import sys
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = ["[STOP]", "[UNK]", "[SPACE]", "[PAD]", "[SEP]", "[CLS]", "[MASK]", "[START]"]
T3_SIZE = {"num_hidden_layers": 1, "intermediate_size": 256}
"""Over ``Llama_520M``'s 30 layers and 4096: T3 goes from about 520 M parameters to about 30 M."""
CORPUS = [
    "the quick brown fox jumps over the lazy dog.",
    "when the sunlight strikes raindrops in the air, they act as a prism and form a rainbow.",
    "hello, this is a tiny model that says nothing at all; it is only random weights!",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,;:!?'\"-()",
]


def build_tokenizer(path: Path) -> None:
    tokenizers: Any = importlib.import_module("tokenizers")
    models: Any = importlib.import_module("tokenizers.models")
    pre_tokenizers: Any = importlib.import_module("tokenizers.pre_tokenizers")
    trainers: Any = importlib.import_module("tokenizers.trainers")
    tokenizer = tokenizers.Tokenizer(models.BPE(unk_token="[UNK]"))
    # Chatterbox replaces spaces by [SPACE] before encoding: split on punctuation and words only.
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=256, special_tokens=SPECIAL_TOKENS, show_progress=False)
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    tokenizer.save(str(path))


def reference_wav(rate: int, seconds: float = 1.0) -> io.BytesIO:
    """A voiced-sounding synthetic clip (a gliding pitch with harmonics and a little noise), as a WAV."""
    np: Any = importlib.import_module("numpy")
    soundfile: Any = importlib.import_module("soundfile")
    t = np.arange(int(rate * seconds)) / rate
    pitch = 120 + 40 * np.sin(2 * np.pi * 1.5 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    wave = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
    wave = 0.3 * wave / np.abs(wave).max() + 0.01 * np.random.default_rng(0).standard_normal(t.size)
    buffer = io.BytesIO()
    soundfile.write(buffer, wave.astype("float32"), rate, format="WAV")
    buffer.seek(0)
    return buffer


def build(directory: Path, seed: int = 0) -> None:
    torch: Any = importlib.import_module("torch")
    save_file: Any = importlib.import_module("safetensors.torch").save_file
    configs: Any = importlib.import_module("chatterbox.models.t3.llama_configs")
    tts: Any = importlib.import_module("chatterbox.tts")
    directory.mkdir(parents=True, exist_ok=True)
    build_tokenizer(directory / "tokenizer.json")
    torch.manual_seed(seed)

    def save(module: Any, name: str) -> None:
        state = {key: value.detach().contiguous().clone() for key, value in module.state_dict().items()}
        save_file(state, str(directory / name))

    save(tts.VoiceEncoder(), "ve.safetensors")
    original = configs.LLAMA_CONFIGS["Llama_520M"]
    configs.LLAMA_CONFIGS["Llama_520M"] = {**original, **T3_SIZE}
    try:
        save(tts.T3(), "t3_cfg.safetensors")
    finally:
        configs.LLAMA_CONFIGS["Llama_520M"] = original
    save(tts.S3Gen(), "s3gen.safetensors")

    # The default voice, made as the published conds.pt was: the model's own conditioning of a clip.
    configs.LLAMA_CONFIGS["Llama_520M"] = {**original, **T3_SIZE}
    try:
        model = tts.ChatterboxTTS.from_local(directory, "cpu")
    finally:
        configs.LLAMA_CONFIGS["Llama_520M"] = original
    model.prepare_conditionals(reference_wav(tts.S3GEN_SR), exaggeration=0.5)
    model.conds.save(directory / "conds.pt")


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python tests/tiny_chatterbox.py DIR")
    build(Path(sys.argv[1]))
    print(f"tiny Chatterbox model written to {sys.argv[1]}")


if __name__ == "__main__":
    main()
