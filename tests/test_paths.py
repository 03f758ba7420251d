"""The path policy of the model microservice API's file paths: only inside the data dir and the allowed directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from parla.paths import PathNotAllowedError, PathPolicy
from parla.settings import Settings


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path, Path]:
    data, extra, outside = tmp_path / "data", tmp_path / "extra", tmp_path / "outside"
    for directory in (data / "refs", extra, outside):
        directory.mkdir(parents=True)
    (data / "refs" / "voice.wav").write_bytes(b"x")
    (outside / "secret.wav").write_bytes(b"x")
    return data, extra, outside


def test_relative_and_absolute_paths_inside_the_roots_resolve(roots: tuple[Path, Path, Path]) -> None:
    data, extra, _ = roots
    policy = PathPolicy([data, extra])
    assert policy.resolve("refs/voice.wav", param="voice_id") == (data / "refs" / "voice.wav").resolve()
    assert policy.resolve(str(data / "refs" / "voice.wav"), param="voice_id") == (data / "refs/voice.wav").resolve()
    assert policy.resolve(str(extra / "new.wav"), param="output_filepath") == (extra / "new.wav").resolve()
    # `..` that stays inside is fine: what counts is where the path ends up.
    assert policy.resolve("refs/../refs/voice.wav", param="voice_id") == (data / "refs" / "voice.wav").resolve()


@pytest.mark.parametrize(
    "raw",
    ["../outside/secret.wav", "refs/../../outside/secret.wav", "/etc/passwd", "/", "", "  ", "a\x00b"],
)
def test_paths_leaving_the_roots_are_refused(roots: tuple[Path, Path, Path], raw: str) -> None:
    data, extra, _ = roots
    with pytest.raises(PathNotAllowedError) as caught:
        PathPolicy([data, extra]).resolve(raw, param="voice_id")
    assert caught.value.status_code == 400 and caught.value.param == "voice_id"


def test_an_absolute_path_elsewhere_is_refused_and_named(roots: tuple[Path, Path, Path]) -> None:
    data, _, outside = roots
    with pytest.raises(PathNotAllowedError, match="outside the allowed directories"):
        PathPolicy([data]).resolve(str(outside / "secret.wav"), param="voice_id")


def test_symlinks_count_where_they_point(roots: tuple[Path, Path, Path]) -> None:
    data, _, outside = roots
    (data / "out-link.wav").symlink_to(outside / "secret.wav")
    (data / "out-dir").symlink_to(outside, target_is_directory=True)
    (data / "in-link.wav").symlink_to(data / "refs" / "voice.wav")
    policy = PathPolicy([data])
    for raw in ("out-link.wav", "out-dir/secret.wav", "out-dir/new.wav"):
        with pytest.raises(PathNotAllowedError):
            policy.resolve(raw, param="voice_id")
    assert policy.resolve("in-link.wav", param="voice_id") == (data / "refs" / "voice.wav").resolve()


def test_a_root_that_is_itself_a_symlink_still_holds_its_files(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real, target_is_directory=True)
    assert PathPolicy([tmp_path / "alias"]).resolve("a.wav", param="voice_id") == real / "a.wav"


def test_output_must_name_a_file(roots: tuple[Path, Path, Path]) -> None:
    data, _, _ = roots
    policy = PathPolicy([data])
    with pytest.raises(PathNotAllowedError, match="is a directory"):
        policy.output("refs")
    assert policy.output("new/dir/out.wav") == data.resolve() / "new" / "dir" / "out.wav"


def test_roots_come_from_the_data_dir_and_parla_allowed_paths(
    roots: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    data, extra, outside = roots
    monkeypatch.setenv("PARLA_ALLOWED_PATHS", f"{extra}, {outside}")
    policy = PathPolicy.from_settings(Settings(data_dir=data, _env_file=None))
    assert policy.roots == (data.resolve(), extra.resolve(), outside.resolve())
    assert policy.base == data.resolve()


def test_a_refusal_names_the_resolved_path_and_the_setting(roots: tuple[Path, Path, Path]) -> None:
    data, extra, outside = roots
    (data / "away").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PathNotAllowedError) as caught:
        PathPolicy([data, extra]).resolve("away/secret.wav", param="voice_id")
    target = (outside / "secret.wav").resolve()
    assert caught.value.detail == (
        f"voice_id 'away/secret.wav' resolves to {target}, outside the allowed directories "
        f"({data.resolve()}, {extra.resolve()}): add its directory ({target.parent}) to PARLA_ALLOWED_PATHS "
        "(a comma-separated list)"
    )
