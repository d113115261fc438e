"""`pip install ./clients/python` in a fresh virtualenv: the client and nothing of the server's.

A real install from the package registry (about 15 s): the only way to know what a user gets.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CHECK = """
import importlib.metadata as md, importlib.util as u, json, pathlib
import gatehouse_client
print(json.dumps({
    "server": [m for m in ("django", "ninja", "celery", "channels", "psycopg", "openai", "agents",
                           "langgraph") if u.find_spec(m) is not None],
    "typed": (pathlib.Path(gatehouse_client.__file__).parent / "py.typed").exists(),
    "requires": md.requires("gatehouse-client"),
    "installed": sorted(d.metadata["Name"].lower() for d in md.distributions()),
}))
"""


@pytest.mark.slow
def test_the_client_installs_into_a_fresh_virtualenv_without_the_server(tmp_path: Path) -> None:
    # From a copy: building in place would leave build/ and *.egg-info in the source tree.
    source = tmp_path / "gatehouse-client"
    shutil.copytree(
        ROOT / "clients" / "python",
        source,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    report = json.loads(
        subprocess.run(
            [str(python), "-c", CHECK], capture_output=True, text=True, check=True, timeout=60
        ).stdout
    )
    assert report["server"] == []
    assert report["typed"] is True
    assert "django" not in report["installed"] and "httpx" in report["installed"]
    plain = [r for r in report["requires"] if "extra ==" not in r]
    assert [r.split(">")[0].split("<")[0].strip() for r in plain] == ["httpx"]
    extras = {
        r.split("extra ==")[1].strip().strip("\"'") for r in report["requires"] if "extra ==" in r
    }
    assert extras == {"openai-agents", "langgraph"}
