"""Suite-wide guards: tests never touch the user's runs/ store or data folder, and torch stays on one thread per
pytest worker (two xdist workers share the machine's two cores)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path_factory, monkeypatch):
    # Anything that falls back to the default store writes to a throwaway folder, never to the repository's runs/.
    if "ABLATION_LAB_STORE" not in os.environ or not os.environ["ABLATION_LAB_STORE"].startswith(str(tmp_path_factory.getbasetemp())):
        monkeypatch.setenv("ABLATION_LAB_STORE", str(tmp_path_factory.mktemp("default-store")))


SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def shared_mnist() -> Path:
    """The real full MNIST (four uncompressed idx files) that development machines and CI have beside the repo."""
    from engine.tasks.mnist import MNIST_STEMS
    if not all((SHARED_MNIST / stem).is_file() for stem in MNIST_STEMS):
        pytest.skip(f"full MNIST not available: {SHARED_MNIST} is absent (it ships beside the repository on "
                    f"development machines and CI)")
    return SHARED_MNIST
