"""Notebooks: what a cell shows for mlshift's objects, progress without a terminal, the example notebook."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import mlshift
from mlshift.adapter import EndpointState, RolloutRecord, VariantState
from mlshift.plan import ApplyEvent
from mlshift.specs.rollout import Canary, HealthGate

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "notebooks" / "deploy_from_experiment.ipynb"
EVIL = "<script>alert(1)</script>"
#: Any escape sequence but a colour (SGR, ending in m), and carriage returns: cursor movement.
CURSOR = re.compile(r"\x1b\[[0-9;?]*[A-Za-ln-z]|\r|\x1b\][^\x07]*\x07")


def _visible(html: str) -> str:
    return re.sub(r"<[^>]+>", " ", html)


def test_model_version_html(memory: mlshift.Client, iris: dict[str, Any]) -> None:
    v = memory.models.register(
        "iris",
        iris["v1"],
        metrics={"accuracy": 0.97},
        tags={"team": EVIL, "api_token": "tok-123"},
        description=f"made by {EVIL} & co",
    )
    memory.models.set_alias("iris", "champion", "1")
    html = memory.models.get("iris:1")._repr_html_()
    text = _visible(html)
    assert "iris:1" in text and "sklearn" in text and "champion" in text and "accuracy=0.97" in text
    assert v.digest[7:19] in text
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "made by &lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html
    assert "tok-123" not in html and "api_token=(hidden)" in text


def test_endpoint_html_shows_variants_weights_and_health(
    memory: mlshift.Client, iris: dict[str, Any]
) -> None:
    memory.models.register("iris", iris["v1"])
    memory.models.register("iris", iris["v2"])
    memory.endpoints.deploy("iris", "iris:1")
    state = memory.endpoints.deploy("iris", "iris:2", traffic=25)
    text = _visible(state._repr_html_())
    assert re.search(r"iris-v1\s+iris:1\s+75%", text) and re.search(r"iris-v2\s+iris:2\s+25%", text)
    assert text.count("healthy") == 3  # the endpoint and both variants


def test_html_escapes_every_field_and_hides_secrets() -> None:
    # Built without validation: names a target would refuse must still be escaped.
    variant = VariantState.model_construct(
        name=EVIL, model="m:1", weight=100, status="failed", detail=f"crashed: {EVIL}"
    )
    variant = variant.model_copy(update={"compute": mlshift.Compute()})
    state = EndpointState.model_construct(
        name=EVIL,
        url="https://admin:hunter2@example.com/ep",
        status="failed",
        variants=(variant,),
        tags={"db_password": "hunter2", "owner": EVIL},
        autoscaling=None,
    )
    html = state._repr_html_()
    assert "<script" not in html and html.count("&lt;script&gt;") == 4
    assert "hunter2" not in html and "admin" not in html and "https://example.com/ep" in html
    started = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    record = RolloutRecord.model_construct(
        id="r1",
        endpoint=EVIL,
        strategy="canary",
        phase="rolled_back",
        started_at=started,
        finished_at=started + timedelta(seconds=12),
        baseline=(variant,),
        target=(),
        reason=f"error rate 50% > 1% ({EVIL})",
        measurements={"error_rate": 0.5},
        steps=(f"add {EVIL}",),
    )
    html = record._repr_html_()
    assert "<script" not in html and "rolled_back" in html and "12.0s" in html
    assert "error_rate=0.5" in _visible(html)


def test_plan_and_apply_result_html(memory: mlshift.Client, iris: dict[str, Any]) -> None:
    memory.models.register("iris", iris["v1"])
    spec = mlshift.EndpointSpec(
        name="iris",
        variants=[mlshift.Variant(name="main", model="iris:1", weight=100)],
        tags={"note": EVIL},
        provider_options={"sagemaker": {"environment": {"DB_PASSWORD": "hunter2"}}},  # ignored by memory://
    )
    plan = memory.plan(spec)
    html = plan._repr_html_()
    assert "memory://: 1 change(s)" in _visible(html) and "create endpoint iris" in html
    assert "hunter2" not in html and "<script" not in html
    result = memory.apply(plan)
    html = result._repr_html_()
    assert "1 change(s) applied" in html and "main" in html and "healthy" in html
    assert "hunter2" not in html and "<script" not in html
    assert "No changes" in memory.plan(spec)._repr_html_()


class _Action:
    def describe(self) -> str:
        return "roll out iris:2 to endpoint iris (canary 10%)"


def _rollout_events() -> list[ApplyEvent]:
    action: Any = _Action()
    bake = {
        "stage_percent": 10,
        "bake_s": 60.0,
        "requests": 40,
        "errors": 0,
        "error_rate": 0.0,
        "p99_ms": 3.2,
    }
    return [
        ApplyEvent(1, 1, action, "start"),
        ApplyEvent(1, 1, action, "progress", detail={"weights": {"iris-v1": 90, "iris-v2": 10}}),
        *(ApplyEvent(1, 1, action, "progress", detail={**bake, "elapsed_s": float(s)}) for s in range(5)),
        ApplyEvent(1, 1, action, "progress", detail={"weights": {"iris-v2": 100}}),
        ApplyEvent(1, 1, action, "done", elapsed=61.5),
    ]


def test_progress_printer_prints_plain_lines() -> None:
    out = io.StringIO()
    printer = mlshift.ProgressPrinter(out, interval=3600)
    for event in _rollout_events():
        printer(event)
    assert out.getvalue().splitlines() == [
        "[1/1] roll out iris:2 to endpoint iris (canary 10%) ...",
        "  traffic: iris-v1 90%, iris-v2 10%",
        "  10% on the new version · 60.0s of 60s left · 40 requests · 0 errors (0.0%) · p99 3.2ms",
        "  traffic: iris-v2 100%",
        "[1/1] done in 61.5s",
    ]


@pytest.mark.parametrize("force_color", [None, "1"])
def test_cli_progress_without_a_terminal_has_no_cursor_movement(
    monkeypatch: pytest.MonkeyPatch, force_color: str | None
) -> None:
    """A CI log or a notebook gets whole lines, also when FORCE_COLOR makes rich think it is a terminal."""
    from mlshift.cli import _output as ui

    monkeypatch.setattr(ui.State, "output", "table")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    if force_color:
        monkeypatch.setenv("FORCE_COLOR", force_color)
    else:
        monkeypatch.delenv("FORCE_COLOR", raising=False)
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    progress = ui.ApplyProgress()
    for event in _rollout_events():
        progress(event)
    text = err.getvalue()
    assert not CURSOR.search(text), repr(text)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
    lines = plain.splitlines()
    assert lines[0] == "[1/1] roll out iris:2 to endpoint iris (canary 10%) ..."
    assert "  10% on the new version · 60.0s of 60s left · 40 requests" in plain
    assert lines[-1] == "[1/1] done in 61.5s"
    assert ("\x1b[" in text) == bool(force_color)  # colours only when asked for


def test_hashing_a_big_artifact_without_a_terminal_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlshift.cli._models import _HashProgress

    monkeypatch.setenv("FORCE_COLOR", "1")
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    gib = 1024**3
    with _HashProgress() as progress:
        for done in range(0, gib + 1, gib // 8):
            progress.update(done, gib)
    assert not CURSOR.search(err.getvalue())
    assert re.sub(r"\x1b\[[0-9;]*m", "", err.getvalue()) == "hashing the artifact (1.0 GB)\n"


def test_progress_printer_follows_a_real_canary(memory: mlshift.Client, iris: dict[str, Any]) -> None:
    memory.models.register("iris", iris["v1"])
    memory.models.register("iris", iris["v2"])
    memory.endpoints.deploy("iris", "iris:1")
    out = io.StringIO()
    memory.endpoints.deploy(
        "iris",
        "iris:2",
        rollout=Canary(
            percent=20,
            bake="1s",
            gate=HealthGate(min_requests=5, probe={"payload": {"instances": iris["rows"]}, "rate": 50}),
        ),
        on_event=mlshift.ProgressPrinter(out, interval=0),
    )
    text = out.getvalue()
    assert not CURSOR.search(text) and "\x1b" not in text
    assert "traffic: iris-v1 80%, iris-v2 20%" in text
    assert "20% on the new version" in text and "traffic: iris-v1 0%, iris-v2 100%" in text
    assert re.search(r"^\[\d/\d\] done in \d+\.\ds$", text, re.MULTILINE)


# ------------------------------------------------------------------------- the example notebook


def _kernel_manager() -> Any:
    """A kernel manager for ipykernel's native kernel: this interpreter, whatever is installed.

    With no kernel folders to search, jupyter_client falls back to the kernelspec ipykernel
    carries, whose command is ``sys.executable -m ipykernel_launcher``: a ``python3`` kernelspec
    installed elsewhere (another venv, ``/usr/local/share/jupyter``) cannot take its place.
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    return KernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[]))


def test_the_kernel_is_this_interpreter() -> None:
    spec = _kernel_manager().kernel_spec
    assert spec.argv[:3] == [sys.executable, "-m", "ipykernel_launcher"]


@pytest.mark.slow
def test_example_notebook_runs_and_leaves_nothing_running(tmp_path: Path, state_dir: Path) -> None:
    import nbclient
    import nbformat

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # The notebook's first cell reads MLSHIFT_TARGET: its state goes to this test's folder, whose
    # fixture fails the test if a router or model server is still running afterwards.
    notebook.cells.insert(
        0,
        nbformat.v4.new_code_cell(
            "import os, sys\n"
            f"os.environ['MLSHIFT_TARGET'] = {f'local://{state_dir}'!r}\n"
            "print('KERNEL', sys.executable)"
        ),
    )
    client = nbclient.NotebookClient(
        notebook,
        km=_kernel_manager(),
        timeout=300,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    outputs = [o for cell in notebook.cells for o in cell.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert f"KERNEL {sys.executable}" in text  # the kernel is this interpreter, with this mlshift
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "model version" in html and "endpoint" in html and "plan" in html
    assert re.search(r"iris-v2.*?20%", _visible(html), re.DOTALL)
    assert "done in" in text and "predictions" in text
    assert not CURSOR.search(text)
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, json.dumps(errors)[:2000]
    # Cleaned up: the last cell deleted the endpoint.
    listed = subprocess.run(
        [sys.executable, "-m", "mlshift", "endpoints", "list", "-o", "json", "-t", f"local://{state_dir}"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(listed.stdout) == []
