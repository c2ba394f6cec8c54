"""ptebench: how badly would another page-cache design fragment the x86 direct map?

Public API (the CLI calls only these):

- :func:`ingest` -- trace text or a capture bundle into one Parquet file
- :func:`load` -- that file as a :class:`Trace` (pandas/Arrow events, stacks, metadata)
- :func:`has_frame` -- select events whose stack contains a frame
"""

from ptebench._version import __version__
from ptebench.api import IngestSummary, ingest
from ptebench.errors import PtebenchError
from ptebench.trace import Trace, has_frame, load

__all__ = ["IngestSummary", "PtebenchError", "Trace", "__version__", "has_frame", "ingest", "load"]
