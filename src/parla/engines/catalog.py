"""The heavy engines Parla knows how to give an environment of their own: what to install, in what
order, and which files their libraries' loaders read.

Heavy engines pin torch and transformers versions that conflict with each other (XTTS-v2 breaks on
transformers 5.24, which Dia needs; Qwen3-TTS wants 4.57; Higgs Audio wants below 4.47), which is
why the model microservice API runs one process per model. So each gets its own virtual
environment (``parla engines install NAME``, ``parla.engines.envs``), built from a recipe:

1. ``torch==2.13.0``, always pinned (an unpinned torch downloads gigabytes of CUDA), and kept fixed
   for every later step by a constraints file;
2. Parla itself with the engine's extra (``parla[xtts]``): what pip can resolve;
3. the packages whose declared dependencies cannot be installed beside that torch (Chatterbox
   declares ``torch==2.6.0``, F5-TTS declares gradio, bitsandbytes and torchcodec), ``--no-deps``;
4. for engines that import torchaudio: PyPI has no torchaudio built for torch 2.13, so torchaudio
   2.11.1 goes in with its native libraries removed, which leaves a pure-Python torchaudio whose
   ``functional`` and ``transforms`` work (``torchaudio.load`` does not: engines read audio with
   soundfile or PyAV).

Every pin here is one these recipes were resolved with (Python 3.11, CPU). Each entry also says
where its weights go (``weights``, read by ``parla.engines.weights``): the layout its library's own
loader reads, the Hugging Face repository whose snapshot has the same layout, and the reference
API's variable for it where there is one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

from parla.engines.weights import Need, WeightsLayout, WeightsPart

TORCH = "torch==2.13.0"
"""The one torch every engine environment gets (the CPU build where pip finds it, e.g. with
``PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu``; PyPI's is the CUDA build)."""
TORCHAUDIO = "torchaudio==2.11.1"
"""The last torchaudio on PyPI; it declares ``torch>=2.11`` but its native libraries are built for
2.11, so they are removed after the install (``Entry.torchaudio_shim``)."""


@dataclass(frozen=True)
class Step:
    """One ``pip install`` of a recipe."""

    label: str
    """What a person sees in the progress bar."""
    packages: tuple[str, ...]
    no_deps: bool = False
    """Installed without the dependencies they declare (those that cannot be installed beside this
    torch); what they really import is in the engine's extra."""


@dataclass(frozen=True)
class Entry:
    """One heavy engine: its environment's recipe and its weights."""

    name: str
    """The engine's name (``parla engines install NAME``, ``parla serve-engine NAME``, ``PARLA_ENGINES__<NAME>__``)."""
    title: str
    extra: str | None
    """The ``[project.optional-dependencies]`` extra installed with Parla (``parla[xtts]``)."""
    requirements: tuple[str, ...]
    """What the extra holds, as pinned in ``pyproject.toml`` (a test keeps the two the same)."""
    no_deps: tuple[str, ...] = ()
    """Installed ``--no-deps`` after Parla and the extra."""
    torchaudio_shim: bool = False
    """The engine imports torchaudio: install ``TORCHAUDIO`` and remove its native libraries."""
    imports: tuple[str, ...] = ()
    """Modules the install imports to prove the environment works (besides ``torch`` and ``parla``)."""
    weights: WeightsLayout = field(default_factory=lambda: WeightsLayout(()))
    size_gb: float = 0.0
    """About how much disk the environment takes, torch and Parla's own dependencies (2.1 GB
    together) included."""
    minutes: float = 0.0
    """About how long an install took here, on two busy cores with pip's cache warm (downloads add to
    a first install on a fresh machine)."""
    backend: str = ""
    """Where the engine has several implementations (``Engine.backend``), the one this environment
    serves; an engine running here on another (Kokoro on ONNX) still gets this environment's worker."""
    notes: str = ""
    """What a person should know about this recipe (a known limitation, a deviation from a pin the
    engine's package declares)."""

    @property
    def hf_repo(self) -> str | None:
        """The Hugging Face repository of the engine's own directory (its main part)."""
        return next((p.hf_repo for p in self.weights.parts if not p.subdir), None)

    def steps(self, parla: tuple[str, ...]) -> tuple[Step, ...]:
        """The pip installs of this recipe, in order, after the environment is made; ``parla``: pip's
        arguments that install Parla with this entry's extra (``-e /src/parla[xtts]``)."""
        steps = [Step(f"torch {TORCH.partition('==')[2]}", (TORCH,))]
        steps.append(Step(f"Parla with parla[{self.extra}]" if self.extra else "Parla", parla))
        if self.no_deps:
            names = ", ".join(p.split("==")[0] for p in self.no_deps)
            steps.append(Step(f"{names} (without its declared dependencies)", self.no_deps, no_deps=True))
        if self.torchaudio_shim:
            steps.append(Step(f"torchaudio {TORCHAUDIO.partition('==')[2]}, pure Python", (TORCHAUDIO,), no_deps=True))
        return tuple(steps)

    def recipe_hash(self, *, device: str, parla: tuple[str, ...], parla_requirements: str) -> str:
        """Changes whenever what the environment would hold changes: the steps, the device, the
        Parla source and its own requirements (an entry point added means a new install)."""
        recipe = {
            "steps": [[s.label, list(s.packages), s.no_deps] for s in self.steps(parla)],
            "shim": self.torchaudio_shim,
            "imports": list(self.imports),
            "device": device,
            "parla": parla_requirements,
        }
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


CATALOG: dict[str, Entry] = {
    entry.name: entry
    for entry in (
        Entry(
            name="xtts",
            title="XTTS-v2 (coqui-tts)",
            extra="xtts",
            # torchcodec: coqui-tts refuses to import without it (from torch 2.9 on), though XTTS-v2
            # never calls it; 0.13.0 declares no dependencies.
            requirements=(
                TORCH,
                TORCHAUDIO,
                "torchcodec==0.13.0",
                "coqui-tts==0.28.0",
                "transformers==5.20.2",
                "six==1.17.0",
            ),
            torchaudio_shim=True,
            imports=("TTS.tts.models.xtts",),
            weights=WeightsLayout(
                (
                    WeightsPart(
                        (Need.of("config.json"), Need.of("model.pth"), Need.of("vocab.json")),
                        optional=("speakers_xtts.pth",),
                        hf_repo="coqui/XTTS-v2",
                    ),
                ),
                reference_env="XTTS_MODEL_DIR",
            ),
            size_gb=2.7,
            minutes=4,
            notes="transformers 5.20.2: 5.24 breaks coqui-tts 0.28's XTTS-v2",
        ),
        Entry(
            name="f5",
            title="F5-TTS",
            extra="f5",
            requirements=(
                TORCH,
                TORCHAUDIO,
                "vocos==0.1.0",
                "encodec==0.1.1",
                "x-transformers==2.31.10",
                "torchdiffeq",
                "ema-pytorch",
                "accelerate",
                "datasets",
                "wandb",
                "transformers==5.24.0",
                "huggingface-hub",
                "safetensors",
                "librosa",
                "soundfile",
                "pydub",
                "matplotlib",
                "rjieba",
                "pypinyin",
                "unidecode",
                "omegaconf",
                "hydra-core",
                "tomli",
                "einops",
                "pyyaml",
                "tqdm",
            ),
            no_deps=("f5-tts==1.1.22",),
            torchaudio_shim=True,
            imports=("f5_tts.infer.utils_infer",),
            weights=WeightsLayout(
                (
                    WeightsPart(
                        (Need.of("model_*.safetensors", "model_*.pt"), Need.of("vocab.txt")),
                        what="the F5-TTS checkpoint",
                        hf_repo="SWivid/F5-TTS",
                        hf_subfolder="F5TTS_v1_Base",
                    ),
                    WeightsPart(
                        (Need.of("config.yaml"), Need.of("pytorch_model.bin")),
                        subdir="vocos",
                        what="the Vocos vocoder",
                        hf_repo="charactr/vocos-mel-24khz",
                    ),
                )
            ),
            size_gb=2.9,
            minutes=2,
            notes="f5-tts declares gradio, bitsandbytes, wandb's servers and torchcodec: installed --no-deps, "
            "with what its inference and training modules import (the package imports its trainer)",
        ),
        Entry(
            name="kokoro",
            title="Kokoro-82M (the torch package)",
            extra="kokoro",
            requirements=(TORCH, "kokoro==0.9.4", "misaki[en]==0.9.4"),
            imports=("kokoro", "misaki.espeak"),
            weights=WeightsLayout(
                (
                    WeightsPart(
                        (Need.of("config.json"), Need.of("kokoro-v1_0.pth"), Need.of("voices/*.pt")),
                        hf_repo="hexgrad/Kokoro-82M",
                    ),
                )
            ),
            size_gb=2.5,
            minutes=2,
            backend="torch",
            notes="the kokoro engine runs on kokoro-onnx in the main environment (parla[kokoro-onnx]) until "
            "this environment and its weights are here; misaki's English G2P would fetch a spaCy model, so "
            "text goes through its espeak-ng front ends",
        ),
        Entry(
            name="dia",
            title="Dia (transformers)",
            extra="dia",
            requirements=(TORCH, "transformers==5.24.0"),
            imports=("transformers.models.dia.modeling_dia", "transformers.models.dac.modeling_dac"),
            weights=WeightsLayout(
                (
                    WeightsPart(
                        (
                            Need.of("config.json"),
                            Need.of("model.safetensors", "model-*.safetensors"),
                            Need.of("processor_config.json", "preprocessor_config.json"),
                            Need.of("tokenizer_config.json"),
                        ),
                        what="the Dia model and processor as save_pretrained writes them",
                        optional=("generation_config.json", "model.safetensors.index.json"),
                        hf_repo="nari-labs/Dia-1.6B-0626",
                    ),
                    WeightsPart(
                        (Need.of("config.json"), Need.of("model.safetensors")),
                        subdir="dac_44khz",
                        what="the DAC audio codec (DacModel)",
                        hf_repo="descript/dac_44khz",
                    ),
                )
            ),
            size_gb=2.2,
            minutes=1,
        ),
        Entry(
            name="chatterbox",
            title="Chatterbox (chatterbox-tts)",
            extra="chatterbox",
            requirements=(
                TORCH,
                TORCHAUDIO,
                "librosa==0.11.0",
                "transformers==5.2.0",
                "diffusers==0.29.0",
                "resemble-perth==1.0.1",
                "conformer==0.3.2",
                "safetensors==0.5.3",
                "s3tokenizer==0.3.0",
                "pyloudnorm",
                "omegaconf",
                "einops",
            ),
            no_deps=("chatterbox-tts==0.1.7",),
            torchaudio_shim=True,
            imports=("chatterbox.tts",),
            weights=WeightsLayout(
                (
                    WeightsPart(
                        (
                            Need.of("ve.safetensors"),
                            Need.of("t3_cfg.safetensors"),
                            Need.of("s3gen.safetensors"),
                            Need.of("tokenizer.json"),
                        ),
                        optional=("conds.pt",),
                        hf_repo="ResembleAI/chatterbox",
                    ),
                )
            ),
            size_gb=2.6,
            minutes=1.5,
            notes="chatterbox-tts 0.1.7 declares torch==2.6.0 and gradio: installed --no-deps; it declares "
            "numpy<2 on Python 3.11 but numpy>=2 on 3.13 from the same code, so Parla's numpy 2 is kept",
        ),
        Entry(
            name="qwen3",
            title="Qwen3-TTS (qwen-tts)",
            extra="qwen3",
            requirements=(
                TORCH,
                TORCHAUDIO,
                "transformers==4.57.3",
                "accelerate==1.12.0",
                "librosa",
                "soundfile",
                "sox",
                "einops",
            ),
            no_deps=("qwen-tts==0.1.1",),
            torchaudio_shim=True,
            imports=("qwen_tts",),
            weights=WeightsLayout(
                (
                    # One part: qwen-tts reads the speech tokenizer from the model's own
                    # speech_tokenizer/ folder (DIR/speech_tokenizer), never from elsewhere.
                    WeightsPart(
                        (
                            Need.of("config.json"),
                            Need.of("generation_config.json"),
                            Need.of("model.safetensors", "model-*.safetensors"),
                            Need.of("tokenizer_config.json"),
                            Need.of("vocab.json"),
                            Need.of("merges.txt"),
                            Need.of("speech_tokenizer/config.json"),
                            Need.of("speech_tokenizer/model.safetensors", "speech_tokenizer/model-*.safetensors"),
                            Need.of("speech_tokenizer/preprocessor_config.json"),
                        ),
                        what="the Base model, its text tokenizer and its speech tokenizer",
                        hf_repo="Qwen/Qwen3-TTS-12Hz-1.7B-Base",
                    ),
                )
            ),
            size_gb=2.5,
            minutes=1.5,
            notes="qwen-tts 0.1.1 declares gradio: installed --no-deps, with the rest of what it declares",
        ),
        Entry(
            name="higgs",
            title="Higgs Audio v2 (boson-multimodal)",
            extra="higgs",
            requirements=(
                TORCH,
                TORCHAUDIO,
                "transformers==4.46.3",
                "accelerate",
                "librosa",
                "dacite",
                "pandas",
                "vector-quantize-pytorch",
                "loguru",
                "pydub",
                "omegaconf",
                "pyloudnorm",
                "einops",
                # What descript-audiotools imports (it is installed --no-deps, below).
                "argbind",
                "julius",
                "ffmpy",
                "flatten-dict",
                "markdown2",
                "randomname",
                "pystoi",
                "torch-stoi",
                "importlib-resources",
                "matplotlib",
                "soundfile",
                "tensorboard",
                "ipython",
            ),
            no_deps=("boson-multimodal==0.1.1", "descript-audio-codec==1.0.0", "descript-audiotools==0.7.2"),
            torchaudio_shim=True,
            imports=("boson_multimodal.serve.serve_engine", "boson_multimodal.audio_processing.higgs_audio_tokenizer"),
            weights=WeightsLayout(
                (
                    WeightsPart(
                        (
                            Need.of("config.json"),
                            Need.of("model.safetensors", "model-*.safetensors"),
                            Need.of("tokenizer.json"),
                            Need.of("tokenizer_config.json"),
                        ),
                        what="the generation model",
                        hf_repo="bosonai/higgs-audio-v2-generation-3B-base",
                    ),
                    WeightsPart(
                        (Need.of("config.json"), Need.of("model.pth")),
                        subdir="tokenizer",
                        what="its audio tokenizer",
                        hf_repo="bosonai/higgs-audio-v2-tokenizer",
                    ),
                    # The audio tokenizer's semantic model, which its constructor asks the hub for by id
                    # (bosonai/hubert_base): the engine has it read from here instead (see
                    # parla.engines.higgs.semantic_model_from).
                    WeightsPart(
                        (Need.of("config.json"), Need.of("model.safetensors", "pytorch_model.bin")),
                        subdir="hubert",
                        what="the audio tokenizer's semantic model (HuBERT)",
                        hf_repo="bosonai/hubert_base",
                    ),
                )
            ),
            size_gb=2.7,
            minutes=4,
            notes="not installable in full here: boson-multimodal 0.1.1 declares torchvision (PyPI's does not "
            "import beside torch 2.13.0), boto3, s3fs and ruff, none of which it imports to generate, and "
            "descript-audiotools declares protobuf<3.20, which onnx (in Parla) cannot have: the three are installed "
            "--no-deps, with transformers 4.46 (it wants <4.47) and what they import. Run end to end here (its "
            "serving engine, audio tokenizer and generation) on a tiny random model: the real weights are not here",
        ),
    )
}
"""The heavy engines, by name."""


class UnknownCatalogEntryError(LookupError):
    """No heavy engine of that name in the catalogue."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no heavy engine {name!r}; the catalogue has: {', '.join(sorted(CATALOG))}")


def entry(name: str) -> Entry:
    """The catalogue's entry for ``name``; raises ``UnknownCatalogEntryError``."""
    try:
        return CATALOG[name]
    except KeyError:
        raise UnknownCatalogEntryError(name) from None


def entries() -> Iterator[Entry]:
    return iter(CATALOG[name] for name in sorted(CATALOG))
