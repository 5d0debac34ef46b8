"""Shared fixtures: where the real data lives, and skipping (or failing, under CI) without it."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def data_root() -> Path:
    """../shared/data beside the checkout, or $CONNECTOME_DATA."""
    return Path(os.environ.get("CONNECTOME_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()


def require(condition: bool, reason: str) -> None:
    """Skip on a user's machine when something external is missing; fail under CI=true."""
    if condition:
        return
    if ON_CI:
        pytest.fail(f"required under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = data_root()
    require(root.is_dir(), f"real EM data not found at {root} (set CONNECTOME_DATA)")
    return root


@pytest.fixture(scope="session")
def fib25_h5(shared_data: Path) -> Path:
    path = shared_data / "fib25-training2" / "fib25_training2.h5"
    require(path.is_file(), f"{path} missing")
    return path


@pytest.fixture(scope="session")
def fib25_png_dir(shared_data: Path) -> Path:
    path = shared_data / "fib25-training2" / "grayscale_maps"
    require(path.is_dir(), f"{path} missing")
    return path


@pytest.fixture(scope="session")
def google_ffn_dir(shared_data: Path) -> Path:
    path = shared_data / "ffn-fib25-google"
    require(path.is_dir(), f"{path} missing")
    return path


@pytest.fixture(scope="session")
def vnc_stack(shared_data: Path) -> Path:
    path = shared_data / "vnc-gerhard-synapses" / "stack1"
    require(path.is_dir(), f"{path} missing")
    return path


@pytest.fixture(scope="session")
def chromium_driver() -> tuple[str, str]:
    """Paths of Debian's chromium and chromedriver."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    require(Path(chromium).exists() and Path(driver).exists(), "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    return chromium, driver


@pytest.fixture(params=("sqlite", "postgresql"))
def backend(request) -> str:
    """A store backend: SQLite always, PostgreSQL where $CONNECTOME_TEST_POSTGRES_URL names a database."""
    if request.param == "postgresql":
        from store_testing import postgres_url

        require(postgres_url() is not None, "CONNECTOME_TEST_POSTGRES_URL is not set (eval \"$(bash .ci/services.sh)\")")
    return request.param


@pytest.fixture
def workspace(tmp_path: Path):
    from volumes.workspace import Workspace

    return Workspace.init(tmp_path / "ws")
