"""Build a tiny, randomly initialised Higgs Audio v2 directory: ``python tests/tiny_higgs.py DIR``.

Run inside the higgs engine environment (it needs ``boson-multimodal``, ``transformers``, ``torch``).
The directory holds exactly what the engine's loader reads, in the layout of
``bosonai/higgs-audio-v2-generation-3B-base`` (``DIR``), ``bosonai/higgs-audio-v2-tokenizer``
(``DIR/tokenizer``) and ``bosonai/hubert_base`` (``DIR/hubert``):

- ``config.json``, ``model.safetensors``: a ``HiggsAudioModel`` as the real one is built (a Llama text
  model whose every layer is a dual-FFN audio layer, no audio tower, Higgs's delay pattern, codebooks of
  1024 codes plus the stream's start and end) with two layers of 64 channels and four codebooks;
- ``tokenizer.json``, ``tokenizer_config.json``: a byte-level BPE (every byte a token) with Higgs's
  special tokens (the Llama-3 chat headers, ``<|audio_out_bos|>``, ``<|AUDIO_OUT|>``...), whose ids the
  model's config names;
- ``hubert/``: a ``HubertModel`` of 768 channels (what the audio tokenizer's semantic side reads) but
  one layer and narrow convolutions, as ``save_pretrained`` writes it;
- ``tokenizer/config.json``, ``tokenizer/model.pth``: a ``HiggsAudioTokenizer`` at 24 kHz with the real
  hop (960 samples a code, 25 a second) in three stages, four codebooks of 1024 codes, built by the
  library's own class (its semantic model read from ``hubert/`` as the engine reads it) and saved as
  a state dict, its codebooks random but initialised, as trained ones are. The semantic model's
  weights are left out of ``model.pth`` (the library loads it with ``strict=False``), so they can
  only come from ``hubert/``.

Random weights never end the audio on purpose: the rows of the audio head for each codebook's stream
end (and start) are zero while the codes' rows give logits of about unit scale, so generation runs to
the engine's cap, and a seed decides the audio.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

HIDDEN = 64
CODEBOOKS = 4
CODES = 1024
SPECIAL_TOKENS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|recipient|>",
    "<|audio_bos|>",
    "<|audio_eos|>",
    "<|audio_out_bos|>",
    "<|AUDIO|>",
    "<|AUDIO_OUT|>",
    "<|scene_desc_start|>",
    "<|scene_desc_end|>",
)
AUDIO_TOKENIZER: dict[str, Any] = {
    "n_filters": 32,
    "D": 64,
    "codebook_dim": 8,
    "target_bandwidths": [0.5, 1, 1.5, 2, 4],
    "ratios": [8, 10, 12],  # 960 samples a code, as the real [8, 5, 4, 2, 3]; fewer of its wide stages
    "sample_rate": 24000,
    "bins": CODES,
    "n_q": CODEBOOKS,
    "semantic_techer": "hubert_base_general",
}


def build_tokenizer(directory: Path, transformers: Any) -> Any:
    tokenizers: Any = importlib.import_module("tokenizers")
    byte_level = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    vocab = {char: i for i, char in enumerate(sorted(byte_level.alphabet()))}
    core = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = byte_level
    core.decoder = tokenizers.decoders.ByteLevel()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    tokenizer.save_pretrained(str(directory))
    return tokenizer


def build_hubert(directory: Path, torch: Any, transformers: Any) -> None:
    config = transformers.HubertConfig(
        hidden_size=768,  # the audio tokenizer's semantic side is built for 768 channels
        num_hidden_layers=1,
        num_attention_heads=12,
        intermediate_size=256,
        conv_dim=(32,) * 7,
        conv_stride=(5, 2, 2, 2, 2, 2, 2),  # the real 320-sample hop at 16 kHz
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=16,
    )
    transformers.HubertModel(config).eval().save_pretrained(str(directory), safe_serialization=True)


def build_model(directory: Path, tokenizer: Any, torch: Any, transformers: Any) -> None:
    higgs: Any = importlib.import_module("boson_multimodal.model.higgs_audio")
    ids = {token: int(tokenizer.convert_tokens_to_ids(token)) for token in SPECIAL_TOKENS}
    text = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=HIDDEN // 4,
        max_position_embeddings=8192,
        rope_theta=500000.0,
        bos_token_id=ids["<|begin_of_text|>"],
        eos_token_id=ids["<|end_of_text|>"],
    )
    config = higgs.HiggsAudioConfig(
        text_config=text.to_dict(),
        audio_adapter_type="dual_ffn_fast_forward",
        audio_dual_ffn_layers=[0, 1],
        audio_ffn_hidden_size=HIDDEN,
        audio_ffn_intermediate_size=2 * HIDDEN,
        encode_whisper_embed=False,
        encode_audio_in_tokens=True,
        skip_audio_tower=True,
        use_delay_pattern=True,
        audio_num_codebooks=CODEBOOKS,
        audio_codebook_size=CODES,
        audio_stream_bos_id=CODES,
        audio_stream_eos_id=CODES + 1,
        audio_in_token_idx=ids["<|AUDIO|>"],
        audio_out_token_idx=ids["<|AUDIO_OUT|>"],
        audio_out_bos_token_id=ids["<|audio_out_bos|>"],
        audio_eos_token_id=ids["<|audio_eos|>"],
        pad_token_id=ids["<|end_of_text|>"],
    )
    model = higgs.HiggsAudioModel(config).eval()
    with torch.no_grad():
        head = model.audio_decoder_proj.audio_lm_head.weight
        head.normal_(0.0, HIDDEN**-0.5)  # logits of about unit scale over each codebook's codes...
        rows = head.view(CODEBOOKS, CODES + 2, HIDDEN)
        rows[:, CODES:].zero_()  # ... and the stream's start and end never the likeliest
    model.save_pretrained(str(directory), safe_serialization=True)


def build_audio_tokenizer(directory: Path, semantic: Path, torch: Any) -> None:
    from parla.engines.higgs import semantic_model_from

    module: Any = importlib.import_module("boson_multimodal.audio_processing.higgs_audio_tokenizer")
    directory.mkdir(parents=True, exist_ok=True)
    with semantic_model_from(semantic, module):
        tokenizer = module.HiggsAudioTokenizer(**AUDIO_TOKENIZER, device="cpu").eval()
    with torch.no_grad():
        # Convolutions that keep the signal's scale (their default init would leave near-silence after
        # a dozen of them): random weights should make audible noise.
        for layer in tokenizer.modules():
            if isinstance(layer, torch.nn.Conv1d | torch.nn.ConvTranspose1d):
                fan_in = layer.in_channels * layer.kernel_size[0] / layer.groups
                layer.weight.normal_(0.0, fan_in**-0.5)
            elif hasattr(layer, "inited") and hasattr(layer, "embed"):
                # A trained codebook, as the real model.pth holds: random codes, marked initialised (an
                # uninitialised one is filled by k-means from the first audio it encodes, at random).
                layer.embed.normal_(0.0, 1.0)
                layer.embed_avg.copy_(layer.embed)
                layer.inited.fill_(1.0)
    state = {k: v for k, v in tokenizer.state_dict().items() if not k.startswith("semantic_model.")}
    torch.save(state, directory / "model.pth")
    (directory / "config.json").write_text(json.dumps(AUDIO_TOKENIZER, indent=2))


def build(directory: Path) -> None:
    torch: Any = importlib.import_module("torch")
    transformers: Any = importlib.import_module("transformers")
    torch.manual_seed(0)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(directory, transformers)
    build_model(directory, tokenizer, torch, transformers)
    build_hubert(directory / "hubert", torch, transformers)
    build_audio_tokenizer(directory / "tokenizer", directory / "hubert", torch)


if __name__ == "__main__":
    build(Path(sys.argv[1]))
