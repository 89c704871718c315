"""A plain (non-editable) install works: migrations and model cards ship inside the wheel."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_install_runs_from_any_directory(tmp_path: Path) -> None:
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr
    wheel = next((tmp_path / "dist").glob("synthdb-*.whl"))
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr
    assert (site / "synthdb" / "migrations" / "env.py").is_file()
    assert list((site / "synthdb" / "migrations" / "versions").glob("0001_*.py"))
    assert (site / "synthdb" / "cli" / "main.py").is_file()
    for package in (ROOT / "synthdb").rglob("__init__.py"):  # every subpackage is listed in pyproject.toml
        assert (site / package.relative_to(ROOT)).is_file(), f"{package.parent.name} missing from the wheel"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNTHDB_")}
    env["PYTHONPATH"] = str(site)

    def synthdb(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "synthdb.cli.main", *args],
            cwd="/",
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    assert synthdb("init", str(tmp_path / "ws")).returncode == 0
    info = synthdb("info", "--workspace", str(tmp_path / "ws"), "--json")
    assert info.returncode == 0, info.stderr
    where = subprocess.run(
        [sys.executable, "-c", "import synthdb.migrations as m; print(m.__file__)"],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.stdout.startswith(str(site))
