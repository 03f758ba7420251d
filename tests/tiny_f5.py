"""Build a tiny, randomly initialised F5-TTS model directory: ``python tests/tiny_f5.py DIR``.

Run inside the f5 engine environment (it needs ``f5-tts``, ``vocos``, ``torch`` and ``safetensors``).
The directory holds exactly what the real loaders read, as ``SWivid/F5-TTS`` and
``charactr/vocos-mel-24khz`` do:

- ``model_0.safetensors``: the EMA weights (``ema_model.``-prefixed keys) of a ``CFM`` around a
  ``DiT`` of one layer of 32 channels, random;
- ``vocab.txt``: f5-tts's own vocabulary (``f5_tts/infer/examples/vocab.txt``);
- ``config.yaml``: an F5-TTS model config naming that small architecture (the real model goes
  without one: the engine then reads f5-tts's own ``F5TTS_v1_Base``);
- ``vocos/config.yaml`` and ``vocos/pytorch_model.bin``: a Vocos of one ConvNeXt layer of 32
  channels, random, in the published config's shape (mel features, 100 bands, ISTFT head).

So that it goes through ``utils_infer.load_model`` and ``load_vocoder(is_local=True)`` unchanged.
"""

from __future__ import annotations

import importlib
import shutil
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

ARCH: dict[str, Any] = {
    "dim": 32,
    "depth": 1,
    "heads": 2,
    "dim_head": 16,
    "ff_mult": 2,
    "text_dim": 16,
    "text_mask_padding": True,
    "qk_norm": None,
    "conv_layers": 1,
    "pe_attn_head": None,
    "attn_backend": "torch",
    "attn_mask_enabled": False,
    "checkpoint_activations": False,
}
MEL = {
    "target_sample_rate": 24000,
    "n_mel_channels": 100,
    "hop_length": 256,
    "win_length": 1024,
    "n_fft": 1024,
    "mel_spec_type": "vocos",
}
VOCOS = {
    "feature_extractor": {
        "class_path": "vocos.feature_extractors.MelSpectrogramFeatures",
        "init_args": {"sample_rate": 24000, "n_fft": 1024, "hop_length": 256, "n_mels": 100, "padding": "center"},
    },
    "backbone": {
        "class_path": "vocos.models.VocosBackbone",
        "init_args": {"input_channels": 100, "dim": 32, "intermediate_dim": 64, "num_layers": 1},
    },
    "head": {
        "class_path": "vocos.heads.ISTFTHead",
        "init_args": {"dim": 32, "n_fft": 1024, "hop_length": 256, "padding": "center"},
    },
}


def build(directory: Path) -> None:
    torch: Any = importlib.import_module("torch")
    yaml: Any = importlib.import_module("yaml")
    safetensors: Any = importlib.import_module("safetensors.torch")
    model_module: Any = importlib.import_module("f5_tts.model")
    utils: Any = importlib.import_module("f5_tts.model.utils")
    vocos_module: Any = importlib.import_module("vocos")

    torch.manual_seed(0)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = directory / "vocab.txt"
    shutil.copyfile(str(files("f5_tts").joinpath("infer/examples/vocab.txt")), vocab)
    vocab_char_map, vocab_size = utils.get_tokenizer(str(vocab), "custom")
    mel = {k: v for k, v in MEL.items() if k != "target_sample_rate"}
    cfm = model_module.CFM(
        transformer=model_module.DiT(**ARCH, text_num_embeds=vocab_size, mel_dim=MEL["n_mel_channels"]),
        mel_spec_kwargs={**mel, "target_sample_rate": MEL["target_sample_rate"]},
        vocab_char_map=vocab_char_map,
    )
    state = {f"ema_model.{k}": v.detach().clone().contiguous() for k, v in cfm.state_dict().items()}
    safetensors.save_file(state, str(directory / "model_0.safetensors"))
    config = {"model": {"name": "F5TTS_tiny", "tokenizer": "custom", "backbone": "DiT", "arch": ARCH, "mel_spec": MEL}}
    (directory / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    vocos_dir = directory / "vocos"
    vocos_dir.mkdir(exist_ok=True)
    (vocos_dir / "config.yaml").write_text(yaml.safe_dump(VOCOS, sort_keys=False))
    vocoder = vocos_module.Vocos.from_hparams(str(vocos_dir / "config.yaml"))
    torch.save(vocoder.state_dict(), vocos_dir / "pytorch_model.bin")


if __name__ == "__main__":
    build(Path(sys.argv[1]))
