"""Pipelines the kfp:// tests run on the fake Kubeflow (their steps run in subprocesses)."""

from __future__ import annotations

from mlshift.pipelines import Fail, InputPath, Metrics, OutputPath, pipeline, step, when


@step
def make(data: OutputPath, rows: int = 3, tag: str = "a") -> None:
    """Write ``rows`` lines to a file."""
    data.mkdir()
    (data / "rows.txt").write_text("\n".join(f"{tag}{i}" for i in range(rows)))


@step(metrics=["share"])
def score(data: InputPath) -> Metrics:
    """The share of lines that are non-empty (always 1.0) times the number of lines / 10."""
    lines = (data / "rows.txt").read_text().splitlines()
    return {"share": len(lines) / 10}


@step
def count(data: InputPath) -> int:
    """How many lines there are."""
    return len((data / "rows.txt").read_text().splitlines())


@step(cache=False)
def publish(n: int, tag: str) -> str:
    """Announce what passed the gate."""
    print(f"publishing {n} rows tagged {tag}")
    return f"{tag}:{n}"


@pipeline
def gated(rows: int = 3, threshold: float = 0.2, tag: str = "a") -> None:
    """make → score and count → publish when the score is high enough, else fail."""
    data = make(rows=rows, tag=tag)
    scores = score(data=data.outputs["data"])
    n = count(data=data.outputs["data"])
    with when(scores.metrics["share"] >= threshold, name="good-enough") as gate:
        publish(n=n.output, tag=tag)
    with gate.otherwise():
        Fail("not enough rows")


@step(cache=False)
def slow(seconds: float = 60.0) -> None:
    """Wait up to ``seconds`` (a step to cancel while it runs)."""
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)


@pipeline
def waiting(seconds: float = 60.0) -> None:
    """One slow step."""
    slow(seconds=seconds)


@pipeline(schedule="0 3 * * *")
def nightly(rows: int = 3) -> None:
    """make, every night at 03:00 UTC."""
    make(rows=rows)


@pipeline(schedule="0 3 * * *", timezone="Europe/Paris")
def nightly_paris(rows: int = 3) -> None:
    """make, every night at 03:00 in Paris."""
    make(rows=rows)
