"""Build tiny, randomly initialised Qwen3-TTS Base models: ``python tests/tiny_qwen3.py DIR``.

Run inside the qwen3 engine environment (it needs ``qwen-tts``, ``transformers``, ``torch``). It makes
two, as the engine finds its two sizes: a "1.7B" in ``DIR`` and a "0.6B" in ``DIR/0.6B`` (each its
own random weights). Each directory holds exactly what ``Qwen3TTSModel.from_pretrained(DIR)`` reads,
as ``Qwen/Qwen3-TTS-12Hz-1.7B-Base`` does:

- ``config.json``, ``model.safetensors``: a ``Qwen3TTSForConditionalGeneration`` of type ``base``
  (it has the speaker encoder that cloning needs) whose talker, code predictor and speaker encoder
  are one layer of 32 channels; four code groups of 64 codes; the ten languages of the real model;
  ``tts_model_size`` as the size says (``1.7B``: ``1b7``, ``0.6B``: ``0b6``);
- ``generation_config.json``: the real model's sampling defaults;
- ``tokenizer_config.json``, ``vocab.json``, ``merges.txt``: a byte-level BPE in the Qwen2
  tokenizer's format with the special tokens qwen-tts writes (``<|im_start|>``...) and
  ``assistant`` as one token, as qwen-tts's prompt slicing expects;
- ``speech_tokenizer/``: a 12 Hz speech tokenizer (``Qwen3TTSTokenizerV2Model``: a Mimi encoder and
  the codec decoder, with the real model's strides, so 1920 samples a code) of 32 channels, and its
  feature extractor's ``preprocessor_config.json``.

Random weights never emit the end-of-speech code on purpose: its row of the talker's head is zero
while the codes' rows are large, so generation runs to the engine's cap, and a seed decides the audio;
the codec's convolutions keep the signal's scale, so that audio is noise, not near-silence.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

CODES = 64
"""Codes per codebook (the real model: 2048)."""
GROUPS = 4
"""Code groups, i.e. codebooks per frame (the real model: 16)."""
HIDDEN = 32
LANGUAGE_NAMES = (
    "chinese",
    "english",
    "japanese",
    "korean",
    "german",
    "french",
    "russian",
    "portuguese",
    "spanish",
    "italian",
)
SPECIAL_TOKENS = ("<|im_start|>", "<|im_end|>", "<|tts_pad|>", "<|tts_text_bos|>", "<|tts_text_eod|>")
SIZES = {"1.7B": "1b7", "0.6B": "0b6"}
GENERATION = {
    "do_sample": True,
    "repetition_penalty": 1.05,
    "temperature": 0.9,
    "top_p": 1.0,
    "top_k": 50,
    "subtalker_dosample": True,
    "subtalker_temperature": 0.9,
    "subtalker_top_p": 1.0,
    "subtalker_top_k": 50,
    "max_new_tokens": 8192,
}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-to-character map, which Qwen2's byte-level BPE uses."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def build_tokenizer(directory: Path, transformers: Any) -> Any:
    """Every byte a token, plus ``assistant`` merged into one (qwen-tts cuts its prompts at fixed
    token positions: ``<|im_start|>assistant\\n`` must be three tokens)."""
    vocab = {char: i for i, char in enumerate(bytes_to_unicode().values())}
    merges = []
    word = "assistant"
    for end in range(2, len(word) + 1):
        merges.append(f"{word[: end - 1]} {word[end - 1]}")
        vocab[word[:end]] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = transformers.Qwen2TokenizerFast(
        vocab_file=str(directory / "vocab.json"), merges_file=str(directory / "merges.txt")
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    return tokenizer


def build(directory: Path, size: str = "1.7B") -> None:
    torch: Any = importlib.import_module("torch")
    transformers: Any = importlib.import_module("transformers")
    safetensors: Any = importlib.import_module("safetensors.torch")
    configs: Any = importlib.import_module("qwen_tts.core.models.configuration_qwen3_tts")
    models: Any = importlib.import_module("qwen_tts.core.models.modeling_qwen3_tts")
    processing: Any = importlib.import_module("qwen_tts.core.models.processing_qwen3_tts")
    codec_configs: Any = importlib.import_module("qwen_tts.core.tokenizer_12hz.configuration_qwen3_tts_tokenizer_v2")
    codecs: Any = importlib.import_module("qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2")

    torch.manual_seed(0 if size == "1.7B" else 1)  # two sizes, two different random models
    directory.mkdir(parents=True, exist_ok=True)

    # The text tokenizer and processor, as the real repository has them: no tokenizer.json.
    tokenizer = build_tokenizer(directory, transformers)
    processing.Qwen3TTSProcessor(tokenizer=tokenizer).save_pretrained(str(directory))
    (directory / "tokenizer.json").unlink(missing_ok=True)
    ids = {token: int(tokenizer.convert_tokens_to_ids(token)) for token in SPECIAL_TOKENS}
    text_vocab = len(tokenizer) + 8

    # The codec's own ids sit above the codes, in the top 1024 of the talker's vocabulary, which
    # generation never samples (save the end of speech), as in the real model (2048 codes, 3072 ids).
    special = CODES
    codec_ids = {
        "codec_pad_id": special,
        "codec_bos_id": special + 1,
        "codec_eos_token_id": special + 2,
        "codec_think_id": special + 3,
        "codec_nothink_id": special + 4,
        "codec_think_bos_id": special + 5,
        "codec_think_eos_id": special + 6,
    }
    languages = {name: special + 7 + i for i, name in enumerate(LANGUAGE_NAMES)}
    predictor = {
        "vocab_size": CODES,
        "hidden_size": HIDDEN,
        "intermediate_size": 2 * HIDDEN,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "max_position_embeddings": 256,
        "num_code_groups": GROUPS,
        "rope_theta": 10000,
    }
    talker = {
        "code_predictor_config": predictor,
        "vocab_size": CODES + 1024,
        "hidden_size": HIDDEN,
        "intermediate_size": 2 * HIDDEN,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "max_position_embeddings": 4096,
        "num_code_groups": GROUPS,
        "text_hidden_size": HIDDEN,
        "text_vocab_size": text_vocab,
        "rope_theta": 10000,
        "rope_scaling": {"rope_type": "default", "type": "default", "mrope_section": [2, 1, 1], "interleaved": True},
        "spk_id": {},
        "spk_is_dialect": {},
        "codec_language_id": languages,
        **codec_ids,
    }
    speaker = {
        "mel_dim": 128,  # fixed: extract_speaker_embedding computes 128 mel bands
        "enc_dim": HIDDEN,  # the embedding goes in among the talker's inputs
        "enc_channels": [16, 16, 16, 32],  # the last: the SE-Res2Net blocks' outputs joined
        "enc_kernel_sizes": [5, 3, 3, 1],
        "enc_dilations": [1, 2, 3, 1],
        "enc_attention_channels": 8,
        "enc_res2net_scale": 4,
        "enc_se_channels": 8,
        "sample_rate": 24000,
    }
    config = configs.Qwen3TTSConfig(
        talker_config=talker,
        speaker_encoder_config=speaker,
        tokenizer_type="qwen3_tts_tokenizer_12hz",
        tts_model_size=SIZES[size],
        tts_model_type="base",
        im_start_token_id=ids["<|im_start|>"],
        im_end_token_id=ids["<|im_end|>"],
        tts_pad_token_id=ids["<|tts_pad|>"],
        tts_bos_token_id=ids["<|tts_text_bos|>"],
        tts_eos_token_id=ids["<|tts_text_eod|>"],
        tie_word_embeddings=False,
    )
    model = models.Qwen3TTSForConditionalGeneration(config).eval()
    with torch.no_grad():
        head = model.talker.codec_head.weight
        head.normal_(0.0, 1.0)  # decisive logits over the codes...
        head[codec_ids["codec_eos_token_id"]].zero_()  # ... and the end of speech never the likeliest
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    safetensors.save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(str(directory))
    # Its speaker encoder's config takes its own fields only (no **kwargs): as the real config.json has it.
    written = json.loads((directory / "config.json").read_text())
    written["speaker_encoder_config"] = speaker
    (directory / "config.json").write_text(json.dumps(written, indent=2))
    (directory / "generation_config.json").write_text(json.dumps(GENERATION, indent=2))

    # The speech tokenizer: the real strides (8*6*5*4 and a compression of 2 to encode, 8*5*4*3*2*2
    # to decode: 1920 samples a code at 24 kHz), tiny channels, GROUPS codebooks of CODES codes.
    encoder = {
        "sampling_rate": 24000,
        "frame_rate": 12.5,
        "audio_channels": 1,
        "hidden_size": HIDDEN,
        "num_filters": 4,
        "num_residual_layers": 1,
        "upsampling_ratios": [8, 6, 5, 4],
        "kernel_size": 7,
        "last_kernel_size": 3,
        "residual_kernel_size": 3,
        "dilation_growth_rate": 2,
        "use_causal_conv": True,
        "pad_mode": "constant",
        "compress": 2,
        "trim_right_ratio": 1.0,
        "codebook_size": CODES,
        "codebook_dim": 16,
        "num_quantizers": GROUPS,
        "num_semantic_quantizers": 1,
        "vector_quantization_hidden_dimension": 16,
        "upsample_groups": HIDDEN,
        "num_hidden_layers": 1,
        "intermediate_size": 2 * HIDDEN,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "head_dim": 8,
        "max_position_embeddings": 8000,
        "sliding_window": 250,
        "use_cache": False,
    }
    decoder = {
        "codebook_size": CODES,
        "codebook_dim": 16,
        "hidden_size": HIDDEN,
        "latent_dim": HIDDEN,
        "max_position_embeddings": 8000,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "head_dim": 8,
        "sliding_window": 72,
        "intermediate_size": 2 * HIDDEN,
        "num_hidden_layers": 1,
        "num_quantizers": GROUPS,
        "upsample_rates": [8, 5, 4, 3],
        "upsampling_ratios": [2, 2],
        "decoder_dim": 64,
    }
    codec_config = codec_configs.Qwen3TTSTokenizerV2Config(
        encoder_config=encoder,
        decoder_config=decoder,
        encoder_valid_num_quantizers=GROUPS,
        input_sample_rate=24000,
        output_sample_rate=24000,
        decode_upsample_rate=1920,
        encode_downsample_rate=1920,
    )
    codec = codecs.Qwen3TTSTokenizerV2Model(codec_config).eval()
    with torch.no_grad():
        # Convolutions that keep the signal's scale (transformers' init would leave 1e-8 of audio
        # after a dozen of them): random weights should make audible noise, not near-silence.
        for module in codec.modules():
            if isinstance(module, torch.nn.Conv1d | torch.nn.ConvTranspose1d):
                fan_in = module.in_channels * module.kernel_size[0] / module.groups
                module.weight.normal_(0.0, fan_in**-0.5)
    codec_state = {k: v.detach().clone().contiguous() for k, v in codec.state_dict().items()}
    for name, tensor in codec_state.items():
        if name.endswith(("embed_sum", "embedding_sum")):  # codebooks start at zero: make their codes differ
            codec_state[name] = torch.randn_like(tensor)
    speech = directory / "speech_tokenizer"
    speech.mkdir(exist_ok=True)
    safetensors.save_file(codec_state, str(speech / "model.safetensors"), metadata={"format": "pt"})
    codec_config.save_pretrained(str(speech))
    transformers.EncodecFeatureExtractor(
        feature_size=1, sampling_rate=24000, padding_value=0.0, return_attention_mask=True
    ).save_pretrained(str(speech))


if __name__ == "__main__":
    # The engine's directory as an operator lays it out with both sizes: the default size (1.7B) in
    # DIR itself, the other in DIR/0.6B.
    build(Path(sys.argv[1]), "1.7B")
    build(Path(sys.argv[1]) / "0.6B", "0.6B")
