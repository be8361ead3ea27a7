"""The GitHub Actions recipe in examples/ci runs: its shell steps, as a runner would run them.

The workflow file is parsed, each job's ``run:`` steps are run in order with the environment
GitHub would give them (``${{ ... }}`` expressions filled in from the environment's variables),
against ``memory://`` and ``local://``. ``gh`` is a stand-in that keeps the pull request's
comments, so the posted plan is checked too. Steps that ``uses:`` an action (checkout, Python,
cloud credentials) and the install step are what the test environment already provides.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import mlshift

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "examples" / "ci"

FAKE_GH = """#!/bin/sh
# gh pr comment PR --body-file FILE [--edit-last]: keeps the pull request's comments in $GH_STATE.
set -e
[ "$1 $2" = "pr comment" ] || { echo "fake gh: unexpected: $*" >&2; exit 64; }
[ -n "$GH_TOKEN" ] || { echo "fake gh: no GH_TOKEN" >&2; exit 4; }
pr=$3; shift 3; body=""; edit=""
while [ $# -gt 0 ]; do
  case "$1" in
    --body-file) body=$2; shift 2;;
    --edit-last) edit=1; shift;;
    *) echo "fake gh: unknown flag $1" >&2; exit 64;;
  esac
done
dir="$GH_STATE/$pr"; mkdir -p "$dir"
count=$(ls "$dir" | wc -l)
if [ -n "$edit" ]; then
  [ "$count" -gt 0 ] || { echo "no comments found for current user" >&2; exit 1; }
  cp "$body" "$dir/$count"
else
  cp "$body" "$dir/$((count + 1))"
fi
"""


def _workflow() -> dict[Any, Any]:
    data: dict[Any, Any] = yaml.safe_load((RECIPE / "mlshift.yml").read_text())
    return data


def _expand(text: str, context: dict[str, Any]) -> str:
    """Fill in ``${{ a.b || 'literal' }}`` as GitHub would; any other expression fails the test."""

    def one(match: re.Match[str]) -> str:
        for operand in (part.strip() for part in match.group(1).split("||")):
            if operand.startswith("'") and operand.endswith("'"):
                value: Any = operand[1:-1]
            else:
                assert re.fullmatch(r"[a-z_]+(\.[A-Za-z_]+)+", operand), f"unsupported: {operand}"
                root, *keys = operand.split(".")
                assert root in ("vars", "github"), f"the test knows no context {root!r}"
                value = context[root]
                for key in keys:
                    value = value.get(key, "") if isinstance(value, dict) else ""
            if value not in ("", None):
                return str(value)
        return ""

    return re.sub(r"\$\{\{(.*?)\}\}", one, text)


class Runner:
    """Runs a workflow job's shell steps in a checkout, like an Actions runner (bash -eo pipefail)."""

    def __init__(self, checkout: Path, tmp: Path) -> None:
        self.checkout = checkout
        self.bin = tmp / "bin"
        self.bin.mkdir()
        # `python` and `mlshift` in the steps are this interpreter, with this checkout of mlshift.
        for name, command in (("python", sys.executable), ("mlshift", f"{sys.executable} -m mlshift")):
            (self.bin / name).write_text(f'#!/bin/sh\nexec {command} "$@"\n')
        (self.bin / "gh").write_text(FAKE_GH)
        for shim in self.bin.iterdir():
            shim.chmod(0o755)
        self.gh_state = tmp / "gh"
        self.summary = tmp / "summary.md"
        self.tmp = tmp

    def comments(self, pr: int) -> list[str]:
        folder = self.gh_state / str(pr)
        return (
            [p.read_text() for p in sorted(folder.iterdir(), key=lambda p: int(p.name))]
            if folder.exists()
            else []
        )

    def run_job(self, job_name: str, event: str, variables: dict[str, str], pr: int = 7) -> list[int]:
        """Run the job as it would run for ``event``; returns each shell step's exit code."""
        job = _workflow()["jobs"][job_name]
        context = {
            "vars": variables,
            "github": {
                "event_name": event,
                "ref": "refs/heads/main" if event == "push" else f"refs/pull/{pr}/merge",
                "token": "ghs_test",
                "event": {"pull_request": {"number": pr}},
            },
        }
        assert self._job_runs(job["if"], context), f"{job_name} does not run on {event}"
        env = {
            **os.environ,
            "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
            "NO_COLOR": "1",
            "GH_STATE": str(self.gh_state),
            "GITHUB_OUTPUT": str(self.tmp / "output"),
            "GITHUB_STEP_SUMMARY": str(self.summary),
            "CI": "true",
        }
        env.update({k: _expand(str(v), context) for k, v in job.get("env", {}).items()})
        codes = []
        for step in job["steps"]:
            if "uses" in step or step["name"] == "Install mlshift":
                continue  # provided by the test environment
            step_env = {**env, **{k: _expand(str(v), context) for k, v in step.get("env", {}).items()}}
            script = _expand(step["run"], context)
            assert "${{" not in script
            result = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
                cwd=self.checkout,
                env=step_env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert "Traceback" not in result.stderr, result.stderr
            codes.append(result.returncode)
            if result.returncode != 0:
                self.failed = result
                break
        return codes

    @staticmethod
    def _job_runs(condition: str, context: dict[str, Any]) -> bool:
        # The recipe's job conditions compare github.event_name and github.ref with literals.
        clauses = [c.strip() for c in condition.split("&&")]
        for clause in clauses:
            left, right = (s.strip() for s in clause.split("=="))
            root, key = left.split(".")
            if context[root][key] != right.strip("'"):
                return False
        return True


@pytest.fixture
def checkout(tmp_path: Path, iris: dict[str, Any]) -> Path:
    """A repository laid out as the recipe says: mlshift.yaml at the root, the model in models/."""
    repo = tmp_path / "repo"
    (repo / "models").mkdir(parents=True)
    shutil.copy(RECIPE / "mlshift.yaml", repo / "mlshift.yaml")
    shutil.copy(iris["v1"], repo / "models" / "iris.skops")
    return repo


def test_the_workflow_plans_on_pull_requests_and_applies_on_main() -> None:
    workflow = _workflow()
    on = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert set(on) == {"pull_request", "push"} and on["push"]["branches"] == ["main"]
    jobs = workflow["jobs"]
    assert jobs["plan"]["environment"] == "plan" and jobs["apply"]["environment"] == "production"
    assert jobs["plan"]["permissions"]["pull-requests"] == "write"
    commands = [s.get("run", "") for s in jobs["apply"]["steps"]]
    assert any("mlshift apply" in c and "--yes" in c for c in commands)
    # Every `mlshift` command line in the recipe parses (a renamed flag fails here too).
    for job in jobs.values():
        for step in job["steps"]:
            for line in step.get("run", "").splitlines():
                if line.strip().startswith("mlshift "):
                    args = shlex.split(line.split(">")[0])[1:]
                    result = subprocess.run(
                        [sys.executable, "-m", "mlshift", *[a for a in args if a != "--yes"], "--help"],
                        capture_output=True,
                        text=True,
                        check=False,
                    )
                    assert result.returncode == 0, line + result.stderr


def test_recipe_on_memory(checkout: Path, tmp_path: Path) -> None:
    runner = Runner(checkout, tmp_path)
    assert runner.run_job("plan", "pull_request", {"MLSHIFT_TARGET": "memory://"}) == [0, 0]
    [comment] = runner.comments(7)
    assert comment.startswith("### mlshift plan: 2 change(s) on `memory://`")
    assert "- register a new version of iris" in comment
    assert "- create endpoint iris (main=iris:(new version) 100%)" in comment

    assert runner.run_job("apply", "push", {"MLSHIFT_TARGET": "memory://"}) == [0]
    summary = runner.summary.read_text()
    assert "mlshift applied 2 change(s) on `memory://`" in summary
    assert "`iris`: healthy (main 100%)" in summary


def test_recipe_on_local_plans_applies_and_then_has_nothing_to_do(
    checkout: Path, tmp_path: Path, state_dir: Path
) -> None:
    variables = {"MLSHIFT_TARGET": f"local://{state_dir}"}
    runner = Runner(checkout, tmp_path)
    try:
        assert runner.run_job("plan", "pull_request", variables) == [0, 0]
        assert runner.comments(7)[0].startswith("### mlshift plan: 2 change(s)")
        assert runner.run_job("apply", "push", variables) == [0]
        assert "`iris`: healthy (main 100%)" in runner.summary.read_text()
        client = mlshift.connect(f"local://{state_dir}")
        assert client.endpoints.predict("iris", [[5.1, 3.5, 1.4, 0.2]]).variant == "main"

        # The next push to the pull request: its comment is updated, not added to.
        assert runner.run_job("plan", "pull_request", variables) == [0, 0]
        [comment] = runner.comments(7)
        assert comment.startswith("### mlshift plan: 0 change(s)") and "No changes." in comment
    finally:
        client = mlshift.connect(f"local://{state_dir}")
        for endpoint in client.endpoints.list():
            client.endpoints.delete(endpoint.name)


def test_a_broken_project_file_fails_the_plan_job_without_a_comment(checkout: Path, tmp_path: Path) -> None:
    text = (checkout / "mlshift.yaml").read_text().replace("weight: 100", "wieght: 100")
    (checkout / "mlshift.yaml").write_text(text)
    runner = Runner(checkout, tmp_path)
    assert runner.run_job("plan", "pull_request", {"MLSHIFT_TARGET": "memory://"}) == [1]
    assert "wieght" in runner.failed.stdout  # the JSON error, printed to the job's log
    assert runner.comments(7) == []


def test_the_environment_picks_the_project_file(checkout: Path, tmp_path: Path) -> None:
    (checkout / "deploy").mkdir()
    text = (checkout / "mlshift.yaml").read_text().replace("models/iris.skops", "../models/iris.skops")
    (checkout / "deploy" / "staging.yaml").write_text(
        text.replace("name: iris\n    compute", "name: iris-staging\n    compute")
    )
    runner = Runner(checkout, tmp_path)
    variables = {"MLSHIFT_TARGET": "memory://", "MLSHIFT_FILE": "deploy/staging.yaml"}
    assert runner.run_job("plan", "pull_request", variables) == [0, 0]
    assert "create endpoint iris-staging" in runner.comments(7)[0]
