"""Offline model resolution: local folder, model root, Hugging Face cache, and the missing-model error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cafe_core.testing.checkpoints import write_hub_cache
from cafe_core.utils.hub import ENV_MODEL_ROOT, ModelNotFoundError, hf_hub_cache_dir, resolve_model

REPO_ID = "tiny-org/tiny-model"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty hub cache, no model root, and HF_HUB_OFFLINE unset (nothing may download anyway)."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    for var in (ENV_MODEL_ROOT, "HF_HUB_OFFLINE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    return cache


def make_model_folder(folder: Path, with_unet: bool = False) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "tiny"}')
    if with_unet:
        (folder / "unet").mkdir()
        (folder / "unet" / "config.json").write_text("{}")
    return folder


def test_local_folder_is_used_as_is(clean_env: Path, tmp_path: Path) -> None:
    folder = make_model_folder(tmp_path / "anywhere" / "model", with_unet=True)
    assert resolve_model(folder) == folder.resolve()
    assert resolve_model(str(folder), subfolder="unet") == (folder / "unet").resolve()


def test_model_root_argument_and_environment(clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "models"
    folder = make_model_folder(root / REPO_ID)
    assert resolve_model(REPO_ID, model_root=root) == folder.resolve()

    monkeypatch.setenv(ENV_MODEL_ROOT, os.pathsep.join([str(tmp_path / "empty-root"), str(root)]))
    assert resolve_model(REPO_ID) == folder.resolve()


def test_hub_cache_layout_is_found_offline(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = make_model_folder(tmp_path / "source", with_unet=True)
    snapshot = write_hub_cache(clean_env, REPO_ID, source)

    found = resolve_model(REPO_ID)
    assert found == snapshot
    assert (found / "config.json").read_text() == '{"model_type": "tiny"}'
    assert resolve_model(REPO_ID, subfolder="unet") == snapshot / "unet"


def test_hub_cache_follows_hf_home_set_after_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    assert hf_hub_cache_dir() == tmp_path / "hf-home" / "hub"


def test_model_root_wins_over_the_working_directory_and_an_explicit_path_over_both(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    local = make_model_folder(tmp_path / REPO_ID)  # relative to the working directory
    in_root = make_model_folder(tmp_path / "root" / REPO_ID)
    write_hub_cache(clean_env, REPO_ID, local)
    assert resolve_model(REPO_ID, model_root=tmp_path / "root") == in_root.resolve()
    assert resolve_model(f"./{REPO_ID}", model_root=tmp_path / "root") == local.resolve()
    assert resolve_model(REPO_ID, model_root=tmp_path / "empty") == local.resolve()  # a path-like name, found here


def test_a_folder_named_like_a_model_where_the_user_stands_is_not_the_model(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    monkeypatch.chdir(tmp_path)
    make_model_folder(tmp_path / "clip")  # e.g. a user's own folder of CLIP experiments
    with pytest.raises(ModelNotFoundError):
        resolve_model("clip", model_root=tmp_path / "models")
    built = make_model_folder(tmp_path / "models" / "clip")
    assert resolve_model("clip", model_root=tmp_path / "models") == built.resolve()
    with pytest.raises(ModelNotFoundError, match="no such folder"):
        resolve_model("./missing", model_root=tmp_path / "models")


def test_missing_model_names_it_and_every_place_looked(clean_env: Path, tmp_path: Path, no_network: None) -> None:
    root = tmp_path / "models"
    root.mkdir()
    with pytest.raises(ModelNotFoundError) as caught:
        resolve_model("meta-llama/Llama-2-13b-chat-hf", model_root=root)
    error = caught.value
    message = str(error)
    assert isinstance(error, FileNotFoundError)
    assert error.__cause__ is None and error.__suppress_context__  # no hub traceback attached
    assert "meta-llama/Llama-2-13b-chat-hf" in message
    assert str(tmp_path / "meta-llama" / "Llama-2-13b-chat-hf") in message  # the local path
    assert str(root / "meta-llama" / "Llama-2-13b-chat-hf") in message  # the model root
    assert str(clean_env) in message  # the hub cache
    assert "hf download meta-llama/Llama-2-13b-chat-hf" in message
    assert ENV_MODEL_ROOT in message
    assert len(error.looked) == 3


def test_missing_model_without_root_says_none_was_given(clean_env: Path, no_network: None) -> None:
    with pytest.raises(ModelNotFoundError, match=f"{ENV_MODEL_ROOT} unset"):
        resolve_model("facebook/dinov2-giant")


def test_an_explicit_path_is_looked_for_there_only(clean_env: Path, no_network: None) -> None:
    with pytest.raises(ModelNotFoundError, match="Check the path") as caught:
        resolve_model("./no/such/model/folder", model_root="models")
    assert "no/such/model/folder (no such folder)" in str(caught.value) and "model root" not in str(caught.value)


def test_cached_snapshot_without_the_subfolder_is_not_a_match(clean_env: Path, tmp_path: Path) -> None:
    write_hub_cache(clean_env, REPO_ID, make_model_folder(tmp_path / "source"))
    with pytest.raises(ModelNotFoundError, match="no subfolder 'vae'"):
        resolve_model(REPO_ID, subfolder="vae")


def test_error_survives_pickling(clean_env: Path) -> None:
    import pickle

    with pytest.raises(ModelNotFoundError) as caught:
        resolve_model("facebook/dinov2-giant")
    copy = pickle.loads(pickle.dumps(caught.value))
    assert str(copy) == str(caught.value) and copy.looked == caught.value.looked


def test_a_checkpoint_pin_names_the_snapshot_and_its_blobs_not_the_path(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What DVC tracks for a real checkpoint: the same snapshot pins the same in any cache, another differs."""
    from cafe_core.workbench.pins import checkpoint_pin

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = make_model_folder(tmp_path / "source", with_unet=True)
    snapshot = write_hub_cache(clean_env, REPO_ID, source)
    pin = checkpoint_pin(REPO_ID)
    assert pin["name"] == REPO_ID and pin["revision"] == snapshot.name and str(clean_env) not in str(pin)
    assert set(pin["files"]) == {"config.json", "unet/config.json"}
    other = tmp_path / "other-cache"
    write_hub_cache(other, REPO_ID, source)
    monkeypatch.setenv("HF_HUB_CACHE", str(other))
    assert checkpoint_pin(REPO_ID) == pin
    (source / "config.json").write_text('{"model_type": "tinier"}')
    write_hub_cache(other, REPO_ID, source)
    assert checkpoint_pin(REPO_ID)["files"]["config.json"] != pin["files"]["config.json"]
    local = checkpoint_pin(source)  # a plain folder: size and modification time stand for content
    size = (source / "config.json").stat().st_size
    assert local["revision"] is None and local["files"]["config.json"].startswith(f"{size}:")
