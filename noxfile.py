"""The front door for every habit: ``nox -s tests lint typing``, ``nox -s demo``, ``nox -s bench``."""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests", "lint", "typing"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False

TEST_DEPS = ["pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100", "skl2onnx>=1.16"]
EXTRAS = ".[serve,sklearn,onnx]"


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (what CI runs). Extra arguments go to pytest."""
    session.install("-e", EXTRAS, *TEST_DEPS)
    # pytest exits 5 when it collected nothing; nox fails on any non-zero code, so an empty
    # run can never pass silently.
    session.run("pytest", *(session.posargs or ["-q"]))


@nox.session(name="tests-core")
def tests_core(session: nox.Session) -> None:
    """Core tests with no model framework or cloud SDK installed (lazy imports hold)."""
    session.install("-e", ".", "pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100")
    session.run("pytest", "-q", "tests/test_imports.py", "tests/test_specs.py", "tests/test_config.py")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", "src", "tests", "examples", "bench", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "examples", "bench", "noxfile.py")


@nox.session
def typing(session: nox.Session) -> None:
    """mypy --strict on src/ and the public-API typing tests."""
    session.install("-e", EXTRAS, "mypy>=1.10", "types-PyYAML", "pytest>=8")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site (mkdocs, strict: broken links fail)."""
    session.install("mkdocs>=1.6")
    session.run("mkdocs", "build", "--strict", "--site-dir", "site")


@nox.session
def demo(session: nox.Session) -> None:
    """Train, register, deploy, predict and canary a model on the local target."""
    session.install("-e", ".[serve,sklearn]")
    session.run("python", "examples/quickstart.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against peers; rewrites docs/performance.md (not part of `tests`)."""
    session.install("-e", ".[serve,sklearn]")
    session.run("python", "bench/run.py", *session.posargs, env={"MLSHIFT_BENCH": "1", **os.environ})
