"""Worker for bench/pipelines.py: define + compile the same N-step chain with kfp.

    python bench/pipeline_chain_kfp.py N REPS OUT_DIR

Same shape as bench/pipeline_chain_mlshift.py (an artifact passed down a chain, one float
parameter on every step), compiled to KFP's IR (the ``pipelineSpec`` Vertex AI runs) as JSON.
No ``from __future__ import annotations`` here: kfp reads the annotations as objects.
"""

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

_start = time.perf_counter()
from kfp import compiler, dsl  # noqa: E402

IMPORT_S = time.perf_counter() - _start


@dsl.component(base_image="python:3.11")
def first(out: dsl.Output[dsl.Artifact], c: float = 1.0) -> None:
    with open(out.path, "w") as f:
        f.write(str(c))


@dsl.component(base_image="python:3.11")
def stage(data: dsl.Input[dsl.Artifact], out: dsl.Output[dsl.Artifact], c: float = 1.0) -> None:
    with open(data.path) as f, open(out.path, "w") as g:
        g.write(f.read() + str(c))


def define_and_compile(n: int, out: Path) -> int:
    @dsl.pipeline(name="chain")
    def chain(c: float = 1.0) -> None:
        prev: Any = first(c=c)
        for _ in range(1, n):
            prev = stage(data=prev.outputs["out"], c=c)

    compiler.Compiler().compile(chain, str(out))
    return out.stat().st_size


def main(n: int, reps: int, out_dir: str) -> None:
    out = Path(out_dir) / "kfp-ir.json"
    times = []
    for _ in range(reps + 1):
        start = time.perf_counter()
        size = define_and_compile(n, out)
        times.append(time.perf_counter() - start)
    warm = statistics.median(times[1:])
    result = {"import_s": IMPORT_S, "first_s": times[0], "warm_s": warm, "bytes": size}
    print("PIPEJSON " + json.dumps(result))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
