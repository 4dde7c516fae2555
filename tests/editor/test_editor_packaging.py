"""The built editor travels in the wheel and is served from the installed package."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from editor_api.ui import CHECKOUT, PACKAGED, find_dist, mount_ui

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ["index.html", "editor.js", "editor.css"]
built = pytest.mark.skipif(
    not (PACKAGED / "index.html").is_file(), reason="editor not built (scripts/setup.sh builds it)"
)


def _copy_source(to: Path) -> Path:
    """What a wheel is built from, without this checkout's build/ and caches."""
    src = to / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("engine", "nodes", "editor_api", "grafana_provisioning", "wordpress_sync"):
        shutil.copytree(ROOT / package, src / package, ignore=skip)
    return src


@built
def test_the_wheel_carries_the_editor_and_the_installed_package_serves_it(tmp_path: Path) -> None:
    src = _copy_source(tmp_path)
    out = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(out), str(src)], check=True, timeout=300)
    (wheel,) = out.glob("klimaflow-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert {f"editor_api/static/{a}" for a in ASSETS} <= names
        assert z.read("editor_api/static/index.html") == (PACKAGED / "index.html").read_bytes()
        assert z.read("editor_api/static/editor.js") == (PACKAGED / "editor.js").read_bytes()

    # Installed elsewhere (no checkout beside it), the package serves its own copy.
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, timeout=300)
    probe = (
        "from fastapi import FastAPI\n"
        "from fastapi.testclient import TestClient\n"
        "from editor_api.ui import DIST, mount_ui\n"
        "app = FastAPI(); mount_ui(app); c = TestClient(app)\n"
        "page = c.get('/editor/'); js = c.get('/editor/editor.js')\n"
        "print(DIST); print(page.status_code, js.status_code, 'editor.js' in page.text)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert run.stdout.splitlines() == [str(site / "editor_api" / "static"), "200 200 True"]


def test_without_a_packaged_build_a_checkout_build_is_served(tmp_path: Path) -> None:
    packaged, checkout = tmp_path / "static", tmp_path / "dist"
    checkout.mkdir()
    (checkout / "index.html").write_text("<title>checkout build</title>", encoding="utf-8")
    assert find_dist(packaged, checkout) == checkout
    (packaged).mkdir()
    (packaged / "index.html").write_text("<title>packaged build</title>", encoding="utf-8")
    assert find_dist(packaged, checkout) == packaged
    app = FastAPI()
    mount_ui(app, find_dist(packaged, checkout))
    client = TestClient(app)
    assert client.get("/").url.path == "/editor/"
    assert client.get("/editor/").text == "<title>packaged build</title>"
    assert CHECKOUT == ROOT / "editor" / "dist"


def test_without_any_build_the_page_says_how_to_make_one(tmp_path: Path) -> None:
    app = FastAPI()
    mount_ui(app, find_dist(tmp_path / "static", tmp_path / "dist"))
    res = TestClient(app).get("/editor/")
    assert (res.status_code, res.text) == (
        503,
        "The visual editor is not built: run scripts/setup.sh (npm ci and npm run build in editor/, "
        "which writes editor_api/static/), or install a klimaflow wheel that includes it.",
    )
