"""Heavy imports stay lazy: `import mlshift` and `mlshift --help` load no SDK and no numpy."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = (
    "numpy",
    "sklearn",
    "boto3",
    "botocore",
    "azure",
    "google",
    "onnxruntime",
    "skops",
    "httpx",
    "uvicorn",
)


def modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def heavy_in(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


def test_import_mlshift_is_light() -> None:
    modules = modules_after("import mlshift")
    assert heavy_in(modules) == []
    assert "pydantic" not in modules  # specs load on first use


def test_cli_help_is_light() -> None:
    code = (
        "import sys; sys.argv = ['mlshift', '--help']\n"
        "from mlshift.cli import app\n"
        "try:\n    app()\nexcept SystemExit:\n    pass"
    )
    modules = modules_after(code)
    assert heavy_in(modules) == []
    assert "pydantic" not in modules


def test_connect_and_plan_need_no_numpy() -> None:
    code = "import mlshift\nc = mlshift.connect('memory://')\nc.endpoints.list()"
    assert "numpy" not in modules_after(code)


def test_public_names_resolve() -> None:
    import mlshift

    for name in mlshift.__all__:
        assert getattr(mlshift, name) is not None
