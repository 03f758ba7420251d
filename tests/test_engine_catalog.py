"""The heavy engines' catalogue: recipes that pin torch, extras that match them, and the weights
each engine's library reads, found on disk only (``PARLA_MODELS_DIR``, the reference API's variable,
an offline Hugging Face cache) or named exactly when missing."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import pytest

from parla.engines.base import EngineContext
from parla.engines.catalog import CATALOG, TORCH, TORCHAUDIO, UnknownCatalogEntryError, entry
from parla.engines.mock import MockEngine
from parla.engines.weights import HF_SOURCE, MODELS_SOURCE, find_weights, hf_snapshot, hub_offline, locate
from parla.settings import Settings

PYPROJECT = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
EXTRAS: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]


# -- recipes --------------------------------------------------------------------------------------


def test_the_catalogue_has_every_engine_of_the_reference_apis() -> None:
    assert set(CATALOG) == {"xtts", "f5", "kokoro", "dia", "chatterbox", "qwen3", "higgs"}
    with pytest.raises(UnknownCatalogEntryError, match=r"no heavy engine 'bark'; the catalogue has: chatterbox, dia"):
        entry("bark")


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_each_extra_is_the_catalogues_and_pins_torch(name: str) -> None:
    recipe = entry(name)
    assert recipe.extra is not None
    assert sorted(EXTRAS[recipe.extra]) == sorted(recipe.requirements), f"pyproject's [{recipe.extra}] drifted"
    assert TORCH in recipe.requirements
    # torchaudio goes in only with its native libraries removed afterwards (they are built for torch 2.11).
    assert (TORCHAUDIO in recipe.requirements) == recipe.torchaudio_shim
    for requirement in (*recipe.requirements, *recipe.no_deps):
        if _name(requirement) in {"torch", "torchaudio", "torchcodec", "transformers"}:
            assert "==" in requirement, f"{requirement}: the libraries whose versions clash are pinned"
    for requirement in recipe.no_deps:
        assert "==" in requirement, f"{requirement}: what goes in --no-deps is pinned"


def _name(requirement: str) -> str:
    return re.split(r"[\[=<>!~; ]", requirement, maxsplit=1)[0].lower()


def test_no_extra_floats_torch_and_the_core_install_has_none() -> None:
    for name, requirements in EXTRAS.items():
        for requirement in requirements:
            if _name(requirement) in {"torch", "torchaudio"}:
                assert "==" in requirement, f"[{name}] {requirement}: an unpinned torch downloads gigabytes of CUDA"
    assert not [r for r in PYPROJECT["project"]["dependencies"] if _name(r) in {"torch", "transformers"}]


def test_a_recipe_is_torch_then_parla_then_what_cannot_take_its_dependencies() -> None:
    steps = entry("chatterbox").steps(("-e", "/src/parla[chatterbox]"))
    assert [s.packages for s in steps] == [
        (TORCH,),
        ("-e", "/src/parla[chatterbox]"),
        ("chatterbox-tts==0.1.7",),
        (TORCHAUDIO,),
    ]
    assert [s.no_deps for s in steps] == [False, False, True, True]
    assert [s.packages for s in entry("dia").steps(("/p[dia]",))] == [(TORCH,), ("/p[dia]",)]


def test_the_recipe_hash_follows_what_the_environment_would_hold() -> None:
    recipe = entry("xtts")
    base = recipe.recipe_hash(device="cpu", parla=("-e", "/p[xtts]"), parla_requirements="a")
    assert base == recipe.recipe_hash(device="cpu", parla=("-e", "/p[xtts]"), parla_requirements="a")
    assert base != recipe.recipe_hash(device="cuda", parla=("-e", "/p[xtts]"), parla_requirements="a")
    assert base != recipe.recipe_hash(device="cpu", parla=("-e", "/p[xtts]"), parla_requirements="b")
    assert base != entry("dia").recipe_hash(device="cpu", parla=("-e", "/p[xtts]"), parla_requirements="a")


def test_known_limitations_are_said() -> None:
    assert "not installable in full here" in entry("higgs").notes
    # Higgs's semantic model (HuBERT) is a part of its own directory, read by the engine from there.
    assert not entry("higgs").weights.known_limitation
    assert [p.hf_repo for p in entry("higgs").weights.parts if p.subdir == "hubert"] == ["bosonai/hubert_base"]
    assert entry("xtts").weights.reference_env == "XTTS_MODEL_DIR" and entry("xtts").hf_repo == "coqui/XTTS-v2"


# -- weights ----------------------------------------------------------------------------------------


def _files(directory: Path, *names: str) -> Path:
    for name in names:
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(b"x")
    return directory


def _snapshot(cache: Path, repo: str, *names: str, revision: str = "0123abcd") -> Path:
    org, _, name = repo.partition("/")
    root = cache / f"models--{org}--{name}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(revision)
    # As huggingface_hub leaves them: the snapshot's files are links to blobs.
    blobs = root / "blobs"
    blobs.mkdir()
    snapshot = root / "snapshots" / revision
    for index, file in enumerate(names):
        (blobs / f"blob{index}").write_bytes(b"x")
        (snapshot / file).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / file).symlink_to(blobs / f"blob{index}")
    return snapshot


def test_weights_in_the_models_dir_are_found(tmp_path: Path) -> None:
    xtts = _files(tmp_path / "models" / "xtts", "config.json", "model.pth", "vocab.json")
    found = find_weights("xtts", entry("xtts").weights, models_dir=tmp_path / "models", hf_cache=tmp_path / "hub")
    assert found.complete and found.path == xtts and found.sources == {"": MODELS_SOURCE}
    assert found.where() == f"{xtts} (PARLA_MODELS_DIR)"


def test_missing_weights_name_the_directory_and_the_files(tmp_path: Path) -> None:
    models = tmp_path / "models"
    found = find_weights("xtts", entry("xtts").weights, models_dir=models, hf_cache=tmp_path / "hub")
    assert not found.complete and found.reason is not None
    assert f"put config.json, model.pth and vocab.json in {models / 'xtts'}/ (it does not exist)" in found.reason
    assert "set XTTS_MODEL_DIR to a directory holding them" in found.reason
    assert f"coqui/XTTS-v2 in the Hugging Face cache ({tmp_path / 'hub'}; not there)" in found.reason
    assert "nothing is downloaded" in found.reason
    _files(models / "xtts", "config.json")
    found = find_weights("xtts", entry("xtts").weights, models_dir=models, hf_cache=tmp_path / "hub")
    assert found.reason is not None and "(missing there: model.pth, vocab.json)" in found.reason
    with pytest.raises(LookupError, match=r"model\.pth"):
        found.path  # noqa: B018 - the error is what is tested


def test_the_reference_apis_variable_comes_after_the_models_dir(tmp_path: Path) -> None:
    reference = _files(tmp_path / "xtts-v2", "config.json", "model.pth", "vocab.json")
    layout = entry("xtts").weights
    found = find_weights("xtts", layout, models_dir=tmp_path / "models", reference_dir=reference, hf_cache=tmp_path)
    assert found.path == reference and found.sources[""] == "XTTS_MODEL_DIR"
    own = _files(tmp_path / "models" / "xtts", "config.json", "model.pth", "vocab.json")
    assert find_weights("xtts", layout, models_dir=tmp_path / "models", reference_dir=reference).path == own
    (reference / "vocab.json").unlink()
    (own / "vocab.json").unlink()
    reason = find_weights("xtts", layout, models_dir=tmp_path / "models", reference_dir=reference).reason or ""
    assert f"XTTS_MODEL_DIR is {reference}, where {reference}/ lacks vocab.json" in reason


def test_a_hugging_face_cache_is_read_offline_part_by_part(tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    checkpoint = _snapshot(cache, "SWivid/F5-TTS", "F5TTS_v1_Base/model_1250000.safetensors", "F5TTS_v1_Base/vocab.txt")
    layout = entry("f5").weights
    found = find_weights("f5", layout, models_dir=tmp_path / "models", hf_cache=cache)
    assert found.part("") == checkpoint / "F5TTS_v1_Base" and found.sources[""] == HF_SOURCE
    assert found.reason is not None and f"put config.yaml and pytorch_model.bin in {tmp_path}/models/f5/vocos/" in (
        found.reason
    )
    assert "the F5-TTS checkpoint" not in found.reason  # what is found is not asked for
    # The vocoder from the models dir, the checkpoint from the cache: each part where it is.
    vocos = _files(tmp_path / "models" / "f5" / "vocos", "config.yaml", "pytorch_model.bin")
    found = find_weights("f5", layout, models_dir=tmp_path / "models", hf_cache=cache)
    assert found.complete and found.part("vocos") == vocos and found.sources == {"": HF_SOURCE, "vocos": MODELS_SOURCE}


def test_the_snapshot_is_the_one_refs_main_names(tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    current = _snapshot(cache, "coqui/XTTS-v2", "config.json", revision="bbbb1111")
    (cache / "models--coqui--XTTS-v2" / "snapshots" / "aaaa0000").mkdir()
    assert hf_snapshot(cache, "coqui/XTTS-v2") == current
    assert hf_snapshot(cache, "coqui/other") is None


def test_globs_and_the_hf_home_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    layout = entry("kokoro").weights
    _snapshot(tmp_path / "hf" / "hub", "hexgrad/Kokoro-82M", "config.json", "kokoro-v1_0.pth")
    found = find_weights("kokoro", layout, models_dir=tmp_path / "models")
    assert (
        found.reason is not None and "the Hugging Face cache's" in found.reason and "lacks voices/*.pt" in found.reason
    )
    _files(tmp_path / "models" / "kokoro", "config.json", "kokoro-v1_0.pth", "voices/af_heart.pt")
    assert find_weights("kokoro", layout, models_dir=tmp_path / "models").complete


def test_an_engine_finds_its_weights_through_its_context(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", xtts_model_dir=tmp_path / "xtts-v2")
    assert settings.resolved_models_dir == tmp_path / "data" / "models"
    assert settings.resolved_engines_dir == tmp_path / "data" / "engines"
    context = MockEngine.from_settings(settings, "xtts").context  # any engine class: the section's name decides
    assert context.models_dir == tmp_path / "data" / "models" and context.weights_dir == tmp_path / "xtts-v2"
    assert MockEngine.from_settings(settings).context.weights_dir is None
    _files(tmp_path / "xtts-v2", "config.json", "model.pth", "vocab.json")
    assert locate("xtts", context).sources[""] == "XTTS_MODEL_DIR"
    bare = EngineContext(data_dir=tmp_path / "data")  # no models dir given: <data_dir>/models
    assert str(tmp_path / "data" / "models" / "xtts") in (locate("xtts", bare).reason or "")


def test_engine_processes_read_hubs_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    env: dict[str, str] = {"HF_HUB_OFFLINE": "0"}
    hub_offline(env)  # even over an operator's 0: nothing downloads at run time
    assert env == {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    for name in env:  # put back as they were after the test
        monkeypatch.delenv(name, raising=False)
    hub_offline()
    assert os.environ["HF_HUB_OFFLINE"] == "1"


# -- device and lifetime settings ----------------------------------------------------------------------


def test_devices_name_a_gpu_by_index_and_the_ttl_has_the_issues_name(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(_env_file=None, device="CUDA:1").device == "cuda:1"
    with pytest.raises(ValueError, match="not one of auto, cpu, cuda, cuda:N"):
        Settings(_env_file=None, device="gpu")
    with pytest.raises(ValueError, match="not one of auto, cpu, cuda, cuda:N"):
        Settings(_env_file=None, engines={"xtts": {"device": "tpu"}})
    monkeypatch.setenv("PARLA_ENGINES__XTTS__TTL_S", "90")
    monkeypatch.setenv("PARLA_ENGINES__XTTS__DEVICE", "cuda:2")
    section = Settings(_env_file=None).engines["xtts"]
    assert section.idle_ttl_s == 90 and section.device == "cuda:2" and section.engine_fields() == {}


def test_serve_refuses_a_gpu_index_it_cannot_see(monkeypatch: pytest.MonkeyPatch) -> None:
    import typer

    import parla.cli

    monkeypatch.setattr(parla.cli, "cuda_device_count", lambda: 1)
    assert parla.cli._check_device(Settings(_env_file=None, device="cuda:0")) == "cuda:0"
    assert parla.cli._check_device(Settings(_env_file=None, device="auto")) == "cuda"
    with pytest.raises(typer.Exit):
        parla.cli._check_device(Settings(_env_file=None, device="cuda:1"))
    monkeypatch.setattr(parla.cli, "cuda_device_count", lambda: 0)
    assert parla.cli._check_device(Settings(_env_file=None, device="auto")) == "cpu"
