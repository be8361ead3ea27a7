"""Heavy imports stay lazy (`import mlshift` and `mlshift --help` load no SDK and no numpy), and
adapters find what they need in public modules (the contracts lint-imports checks)."""

from __future__ import annotations

import configparser
import json
import subprocess
import sys
from pathlib import Path

HEAVY = (
    "numpy",
    "sklearn",
    "boto3",
    "botocore",
    "azure",
    "google",
    "onnxruntime",
    "skops",
    "xgboost",
    "lightgbm",
    "mlflow",
    "pandas",
    "httpx",
    "uvicorn",
)


def modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def heavy_in(modules: set[str]) -> list[str]:
    # What the bare interpreter already holds is not mlshift's doing: a `*-nspkg.pth` file (some
    # google-cloud wheels ship one) creates empty `google` namespace modules at start-up.
    at_start = modules_after("pass")
    return sorted(m for m in modules - at_start if m.split(".")[0] in HEAVY)


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


ROOT = Path(__file__).resolve().parents[1]

#: What an adapter needs from core, and the public module that offers it.
ADAPTER_MODULES = {
    "mlshift.adapter": [
        "Adapter",
        "PipelineService",
        "EndpointService",
        "ModelRegistry",
        "Capability",
        "ShadowMode",
        "target_options",
    ],
    "mlshift.pipelines.ir": ["PipelineIR", "StepIR", "ConditionIR", "InputIR", "OperandIR", "ValueType"],
    "mlshift.pipelines.runs": ["RemoteRunState", "RemotePipelineRun", "StepRun", "RunStatus", "StepStatus"],
    "mlshift.pipelines.code": ["load_callable", "code_digest"],
    "mlshift.serving": ["InProcessCaller"],
    "mlshift.artifacts": ["digest_path", "verify_digest"],
    "mlshift.specs": ["SpecModel"],
}


def test_public_modules_offer_what_adapters_need() -> None:
    import importlib

    for module, names in ADAPTER_MODULES.items():
        loaded = importlib.import_module(module)
        for name in names:
            assert name in loaded.__all__, f"{module}.{name}"
            assert getattr(loaded, name) is not None


def test_every_adapter_is_held_to_public_modules() -> None:
    # lint-imports checks the contract; this checks that no adapter package escapes it.
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    roots = config["importlinter"]["root_packages"].split()
    held = config["importlinter:contract:adapters-use-public-modules"]["source_modules"].split()
    adapters = sorted(p.parent.name for p in ROOT.glob("adapters/*/src/*/__init__.py"))
    assert adapters, "no adapter packages found"
    for package in adapters:
        assert package in roots and package in held, f"add {package} to .importlinter"


def test_private_module_names_are_recognised() -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import importlinter  # noqa: F401  (installed by nox -s tests: the contract type plugs into it)
        from import_contracts import is_private
    finally:
        sys.path.pop(0)
    assert is_private("._client") and is_private(".pipelines._ir") and is_private(".serving._inprocess")
    assert not is_private(".pipelines.ir") and not is_private(".serving.__main__") and not is_private("")
