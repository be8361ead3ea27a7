"""Pipeline runs in neutral terms (public): what a run handle reports on every target.

:class:`PipelineRun` is what ``client.pipelines.run()`` returns; :class:`StepRun` is one step
of it. A cloud adapter's :class:`~mlshift.adapter.PipelineService` reports a run as a
:class:`RemoteRunState` made of :class:`StepRun` records, and :class:`RemotePipelineRun` turns
that into a :class:`PipelineRun`.
"""

from __future__ import annotations

from mlshift.adapter import PipelineService
from mlshift.pipelines._remote import RemotePipelineRun, RemotePipelineService, RemoteRunState
from mlshift.pipelines._run import FINISHED, PipelineEvent, PipelineRun, RunStatus, StepRun, StepStatus

__all__ = [
    "FINISHED",
    "PipelineEvent",
    "PipelineRun",
    "PipelineService",
    "RemotePipelineRun",
    "RemotePipelineService",
    "RemoteRunState",
    "RunStatus",
    "StepRun",
    "StepStatus",
]
