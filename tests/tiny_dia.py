"""Build a tiny, randomly initialised Dia model directory: ``python tests/tiny_dia.py DIR``.

Run inside the dia engine environment (it needs ``transformers`` and ``torch``). The directory holds
exactly what the engine's loader reads, as ``save_pretrained`` writes it for ``nari-labs/Dia-1.6B-0626``
and ``descript/dac_44khz``:

- ``config.json``, ``model.safetensors``, ``generation_config.json``: a ``DiaForConditionalGeneration``
  with one encoder and one decoder layer of 32 channels, random, in the real model's shape where the
  processor depends on it (a byte vocabulary, 9 codebooks of 1024 codes, Dia's delay pattern);
- the processor's files (``DiaProcessor.save_pretrained``: the feature extractor and the byte tokenizer);
- ``dac_44khz/config.json``, ``dac_44khz/model.safetensors``: a ``DacModel`` at 44.1 kHz with the real
  codec's 512-sample hop and 9 codebooks of 1024 codes, but a few channels only, random.

So that it goes through ``from_pretrained`` and ``generate`` unchanged.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

DAC: dict[str, Any] = {
    "encoder_hidden_size": 4,
    "downsampling_ratios": [2, 4, 8, 8],  # the real codec's: 512 samples a frame, as Dia's processor expects
    "decoder_hidden_size": 32,
    "n_codebooks": 9,
    "codebook_size": 1024,
    "codebook_dim": 4,
    "sampling_rate": 44_100,
}
ENCODER: dict[str, Any] = {
    "num_hidden_layers": 1,
    "hidden_size": 32,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "intermediate_size": 64,
    "vocab_size": 256,
}
DECODER: dict[str, Any] = {
    "num_hidden_layers": 1,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 16,
    "cross_num_attention_heads": 2,
    "cross_head_dim": 16,
    "cross_num_key_value_heads": 2,
    "cross_hidden_size": 32,
    "vocab_size": 1028,
    "num_channels": 9,
}


def build(directory: Path) -> None:
    torch: Any = importlib.import_module("torch")
    transformers: Any = importlib.import_module("transformers")

    torch.manual_seed(0)
    directory.mkdir(parents=True, exist_ok=True)
    dac = transformers.DacModel(transformers.DacConfig(**DAC)).eval()
    dac.save_pretrained(str(directory / "dac_44khz"))
    config = transformers.DiaConfig(
        encoder_config=transformers.DiaEncoderConfig(**ENCODER),
        decoder_config=transformers.DiaDecoderConfig(**DECODER),
    )
    model = transformers.DiaForConditionalGeneration(config).eval()
    model.save_pretrained(str(directory))
    features = transformers.DacFeatureExtractor(sampling_rate=44_100, hop_length=512)
    processor = transformers.DiaProcessor(features, transformers.DiaTokenizer(), dac)
    processor.save_pretrained(str(directory))


if __name__ == "__main__":
    build(Path(sys.argv[1]))
