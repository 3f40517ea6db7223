import os
import socket
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def project_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def dreambench() -> Path:
    path = SHARED / "dreambench"
    if not path.is_dir():
        pytest.skip(f"DreamBench photos not found at {path}")
    return path


@pytest.fixture(scope="session")
def tiny_sd2_hub(tmp_path_factory) -> Path:
    """A Hugging Face cache holding every `sd2` checkpoint and the variants, tiny and random, in the
    real layouts (`cafe_core.testing.checkpoints`); set HF_HUB_CACHE to it to use it."""
    from cafe_core.testing.checkpoints import write_tiny_checkpoints

    cache = tmp_path_factory.mktemp("hf-cache")
    write_tiny_checkpoints(cache, layout="hub", variants=True)
    return cache


@pytest.fixture(scope="session")
def tiny_sd2_root(tmp_path_factory) -> Path:
    """The same `sd2` checkpoints as `<root>/<repo id>` folders: a model root."""
    from cafe_core.testing.checkpoints import write_tiny_checkpoints

    root = tmp_path_factory.mktemp("sd2-models")
    write_tiny_checkpoints(root)
    return root


@pytest.fixture(autouse=True)
def _isolated_mlflow(tmp_path, monkeypatch):
    """Tests never write into the project's MLflow store."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    yield


torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly on any attempt to resolve a host or open a connection."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="session")
def world():
    """The default CAFE-mini world (seed 0), shared by every test that reads it and changes nothing."""
    from cafe_core.world import World, WorldConfig

    return World(WorldConfig(seed=0))


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """A project folder whose world models (core and small) and fidelity probe were pretrained
    with tiny settings; the probe's run is logged to `mlflow-probe.db` in the project."""
    from cafe_core.workbench.config import params_from_dict
    from cafe_core.workbench.stages.fidelity import fidelity_probe_stage
    from cafe_core.workbench.stages.pretrain_world import pretrain_models
    from cafe_core.world.pretrain import MODELS, SMALL_MODELS

    from helpers import tiny_raw

    root = tmp_path_factory.mktemp("project")
    params = params_from_dict(tiny_raw())
    pretrain_models(params, root, models=MODELS + SMALL_MODELS)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow-probe.db'}")
        fidelity_probe_stage(params, root)
    return params, root


@pytest.fixture(scope="session")
def assistant_project(tiny_world):
    """The tiny world with teacher data, G, its guidance scales and the `mse` assistant trained (every
    training seed); its runs are logged to `mlflow-assistant.db` in the project, where the tests read them back."""
    from cafe_core.workbench.stages.guidance import guidance_grid
    from cafe_core.workbench.stages.teacher_data import teacher_data
    from cafe_core.workbench.stages.train_assistant import train_assistant_stage
    from cafe_core.workbench.stages.train_generator import train_generator_stage

    params, root = tiny_world
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow-assistant.db'}")
        teacher_data(params, root)
        train_generator_stage(params, root, "main")
        guidance_grid(params, root)
        selection = train_assistant_stage(params, root, "mse")
    return params, root, selection


@pytest.fixture(scope="module")
def tiny_pipe():
    """A CafePipeline of random tiny parts (cafe_core.testing.tiny_pipeline), its progress bar off."""
    from cafe_core.testing import tiny_pipeline

    pipe = tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe
