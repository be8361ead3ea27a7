"""Where a step's Python code lives and how a step process loads it again (public).

A ``@step`` function is recorded in the IR by its location (:class:`~mlshift.pipelines.ir.PythonCode`:
module, file, root, qualified name) and the digest of its code. A runner on another machine
(a cloud step's container) ships the file and calls :func:`load_callable` to get the function back.
"""

from __future__ import annotations

from mlshift.pipelines._code import code_digest, load_callable

__all__ = ["code_digest", "load_callable"]
