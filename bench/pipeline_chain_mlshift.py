"""Worker for bench/pipelines.py: define + validate + compile an N-step chain with mlshift.

    python bench/pipeline_chain_mlshift.py N REPS OUT_DIR [ir|kfp]

``kfp`` compiles to a KFP PipelineSpec (``mlshift.pipelines.kfp``) instead of mlshift's IR: the
same document kfp's compiler writes, so that comparison is like for like.

The DAG: ``first`` writes an artifact, then N-1 ``stage`` steps each read the previous step's
artifact and write their own; every step takes the float parameter ``c``. Prints one
``PIPEJSON`` line: import time, the first define + compile in this fresh process (lazy
imports included), the median of REPS more, and the size of the IR written.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

_start = time.perf_counter()
from mlshift.pipelines import InputPath, OutputPath, Param, Pipeline, step  # noqa: E402

IMPORT_S = time.perf_counter() - _start


@step
def first(out: OutputPath, c: float = 1.0) -> None:
    out.write_text(str(c))


@step
def stage(data: InputPath, out: OutputPath, c: float = 1.0) -> None:
    out.write_text(data.read_text() + str(c))


def define_and_compile(n: int, out: Path, fmt: str = "ir") -> int:
    c = Param("c", float)
    prev = first(c=c)
    calls = [prev]
    for i in range(1, n):
        prev = stage.options(name=f"stage-{i}")(data=prev.outputs["out"], c=c)
        calls.append(prev)
    pipeline = Pipeline("chain", params={"c": 1.0}, steps=calls)
    if fmt == "kfp":
        from mlshift.pipelines.kfp import compile_kfp

        return out.write_text(json.dumps(compile_kfp(pipeline.ir, image="python:3.11")))
    return out.write_text(pipeline.to_json())


def main(n: int, reps: int, out_dir: str, fmt: str = "ir") -> None:
    out = Path(out_dir) / f"mlshift-{fmt}.json"
    times = []
    for _ in range(reps + 1):
        start = time.perf_counter()
        size = define_and_compile(n, out, fmt)
        times.append(time.perf_counter() - start)
    warm = statistics.median(times[1:])
    result = {"import_s": IMPORT_S, "first_s": times[0], "warm_s": warm, "bytes": size}
    print("PIPEJSON " + json.dumps(result))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], *sys.argv[4:5])
