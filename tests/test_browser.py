"""A real browser: headless Chromium (Debian's, driven by Playwright) opens JupyterLab on a tiny trained
project, runs the blending demo, moves the lambda slider, and sees the drawing change. The
screenshots are kept in test-artifacts/browser/."""

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's Chromium, installed by scripts/install-browser the first time (root or sudo, apt)."""
    if not CHROMIUM.is_file():
        result = subprocess.run([str(ROOT / "scripts" / "install-browser")], capture_output=True, text=True)
        if result.returncode != 0 or not CHROMIUM.is_file():
            pytest.fail(f"scripts/install-browser could not install Chromium:\n{result.stderr[-2000:]}")
    return CHROMIUM


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(assistant_project, tmp_path_factory):
    """JupyterLab on the tiny project (token auth on), its kernel the environment's python3."""
    import yaml

    from helpers import tiny_raw

    _, root, _ = assistant_project
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_raw()))
    (root / "notebooks").mkdir(exist_ok=True)
    shutil.copy(ROOT / "notebooks" / "blending_demo.ipynb", root / "notebooks")
    home = tmp_path_factory.mktemp("jupyter")
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "CAFE_PROJECT_ROOT": str(root),
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
    }
    command = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--ServerApp.port={port}",
        "--ServerApp.ip=127.0.0.1", "--allow-root", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]  # fmt: skip
    log = open(home / "lab.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start:\n{(home / 'lab.log').read_text()[-3000:]}")
                time.sleep(0.5)
        with pytest.raises(urllib.error.HTTPError):  # token auth stays on
            urllib.request.urlopen(f"{base}/api/contents/notebooks", timeout=5)
        yield base, token
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_blending_demo_in_jupyterlab_redraws_when_lambda_moves(chromium, lab):
    from playwright.sync_api import sync_playwright

    base, token = lab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/lab/tree/notebooks/blending_demo.ipynb?token={token}")
            page.locator(".jp-Notebook").first.wait_for(timeout=90_000)
            page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=90_000)  # the kernel is up
            news = page.locator(".jp-toast-button", has_text="No")  # "notified about Jupyter news?"
            if news.count():
                news.first.click()
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
            drawing = page.locator("img.cafe-drawing")
            drawing.wait_for(timeout=120_000)
            status = page.locator(".cafe-status")
            page.wait_for_function(
                "() => document.querySelector('.cafe-status')?.textContent.includes('diffusion')", timeout=60_000
            )
            before = drawing.get_attribute("src")
            assert "reference weights: 0.50" in status.inner_text()
            page.screenshot(path=str(ARTIFACTS / "blending_demo_before.png"), full_page=True)
            handle = page.locator(".cafe-lam .noUi-handle")
            track = page.locator(".cafe-lam .noUi-target").bounding_box()
            box = handle.bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.mouse.down()
            page.mouse.move(track["x"] + track["width"] + 20, box["y"] + box["height"] / 2, steps=8)
            page.mouse.up()
            page.wait_for_function(
                "() => document.querySelector('.cafe-status')?.textContent.includes('reference weights: 1.00')",
                timeout=60_000,
            )
            page.wait_for_function(
                "src => document.querySelector('img.cafe-drawing')?.getAttribute('src') !== src", arg=before
            )
            page.screenshot(path=str(ARTIFACTS / "blending_demo_after.png"), full_page=True)
            assert "diffusion" in status.inner_text()
        finally:
            browser.close()
