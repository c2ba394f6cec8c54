"""ptebench: how badly would another page-cache design fragment the x86 direct map?

Public API (the CLI calls only these):

- :func:`ingest` -- trace text or a capture bundle into one Parquet file
- :func:`load` -- that file as a :class:`Trace` (pandas/Arrow events, stacks, metadata)
- :func:`has_frame` -- select events whose stack contains a frame
- :func:`replay` -- a trace through the direct-map model, as a :class:`Result`
- :func:`validate` -- a faithful replay of a capture checked against the kernel's own counters
"""

from ptebench._version import __version__
from ptebench.api import IngestSummary, ingest
from ptebench.errors import PtebenchError
from ptebench.results import Result, write_json, write_splits
from ptebench.runner import replay, validate
from ptebench.trace import Trace, has_frame, load

__all__ = ["IngestSummary", "PtebenchError", "Result", "Trace", "__version__", "has_frame", "ingest", "load",
           "replay", "validate", "write_json", "write_splits"]
