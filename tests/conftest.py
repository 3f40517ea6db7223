import os
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


@pytest.fixture(autouse=True)
def _isolated_mlflow(tmp_path, monkeypatch):
    """Tests never write into the project's MLflow store."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    yield


torch.set_num_threads(min(2, os.cpu_count() or 1))
