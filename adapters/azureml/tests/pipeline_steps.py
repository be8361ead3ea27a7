"""A small pipeline for the tests: its steps run in a process of their own, which imports this
file alone (the way a step's source file is shipped to Azure ML), so it imports nothing else."""

from __future__ import annotations

from mlshift.pipelines import InputPath, OutputPath, pipeline, step


@step
def produce(out: OutputPath) -> None:
    """Write four characters."""
    out.write_text("rows")


@step
def consume(data: InputPath) -> int:
    """How many characters ``produce`` wrote."""
    return len(data.read_text())


@pipeline(schedule="0 3 * * *")
def tiny() -> None:
    """produce → consume, every night at 03:00."""
    consume(data=produce().outputs["out"])
