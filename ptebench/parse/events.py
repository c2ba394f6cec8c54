"""The events ptebench types, their fields as the kernel prints them, and the Arrow schema.

Field order and spelling follow the TP_printk formats of include/trace/events/kmem.h
(Linux >= 5.14 prints ``pfn=0x%lx``; older kernels ``pfn=%lu``: both radixes parse).
Every other well-formed event is kept generically: name, time, CPU, pid, its raw
field text in ``fields``, and its stack.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from ptebench.parse._scan import V_INT, V_PTR, V_STR


@dataclass(frozen=True, slots=True)
class Field:
    key: str  # as printed: "pfn", "gfp_flags", ...
    kind: int  # V_PTR, V_INT or V_STR
    column: str | None  # the events-table column it fills (None: not stored)
    required: bool = True  # keyed parsing: must be present
    default: int | None = None  # keyed parsing: value when absent (None: null)


def _f(key: str, kind: int = V_INT, column: str | None = None, *, required: bool = True,
       default: int | None = None) -> Field:
    col = column if column is not None else (None if kind == V_PTR else key)
    return Field(key, kind, col, required, default)


def _opt(key: str, kind: int = V_INT, column: str | None = None, default: int | None = None) -> Field:
    return _f(key, kind, column, required=False, default=default)


#: kmem page events -> printed fields, in TP_printk order (include/trace/events/kmem.h, 6.1)
KMEM_EVENTS: dict[str, tuple[Field, ...]] = {
    # TRACE_EVENT(mm_page_alloc): "page=%p pfn=0x%lx order=%d migratetype=%d gfp_flags=%s"
    "mm_page_alloc": (_f("page", V_PTR), _f("pfn"), _f("order"), _f("migratetype"), _f("gfp_flags", V_STR, "gfp")),
    # TRACE_EVENT(mm_page_free): "page=%p pfn=0x%lx order=%d"
    "mm_page_free": (_f("page", V_PTR), _f("pfn"), _f("order")),
    # TRACE_EVENT(mm_page_free_batched): "page=%p pfn=0x%lx order=0"
    "mm_page_free_batched": (_f("page", V_PTR), _f("pfn"), _f("order")),
    # DEFINE_EVENT(mm_page, mm_page_alloc_zone_locked): "... order=%u migratetype=%d percpu_refill=%d"
    "mm_page_alloc_zone_locked": (
        _f("page", V_PTR), _f("pfn"), _f("order"), _f("migratetype"), _f("percpu_refill"),
    ),
    # TRACE_EVENT(mm_page_pcpu_drain): "page=%p pfn=0x%lx order=%d migratetype=%d"
    "mm_page_pcpu_drain": (_f("page", V_PTR), _f("pfn"), _f("order"), _f("migratetype")),
    # TRACE_EVENT(mm_page_alloc_extfrag)
    "mm_page_alloc_extfrag": (
        _f("page", V_PTR), _f("pfn"), _f("alloc_order"), _f("fallback_order"), _f("pageblock_order"),
        _f("alloc_migratetype"), _f("fallback_migratetype"), _f("fragmenting"), _f("change_ownership"),
    ),
}

#: the same events parsed by key, in any order, for field lists other than the 6.1 TP_printk one:
#: kernels before 4.1 (``page=`` and a pfn computed at print time), the ``cold=`` of batched frees
#: before 4.15 (Mel Gorman, "mm, Remove cold parameter from free_hot_cold_page*"), vendor fields
#: (``nr_free=`` in Samsung's Android 4.x kernels), and the raw struct fields that libtraceevent
#: prints for ``trace-cmd report -R`` and ``[FAILED TO PARSE]``: ``pfn order gfp_flags migratetype``
#: with no ``page``, no ``order`` in batched frees (always 0), no ``percpu_refill`` before 5.19
#: (10e0f7530205 made it a recorded field), no ``pageblock_order``/``fragmenting`` in extfrag.
KMEM_KEYED: dict[str, tuple[Field, ...]] = {
    "mm_page_alloc": (_opt("page", V_PTR), _f("pfn"), _f("order"), _f("migratetype"), _f("gfp_flags", V_STR, "gfp")),
    "mm_page_free": (_opt("page", V_PTR), _f("pfn"), _f("order")),
    "mm_page_free_batched": (_opt("page", V_PTR), _f("pfn"), _opt("order", default=0), _opt("cold", column="")),
    "mm_page_alloc_zone_locked": (
        _opt("page", V_PTR), _f("pfn"), _f("order"), _f("migratetype"), _opt("percpu_refill"),
    ),
    "mm_page_pcpu_drain": (_opt("page", V_PTR), _f("pfn"), _f("order"), _f("migratetype")),
    "mm_page_alloc_extfrag": (
        _opt("page", V_PTR), _f("pfn"), _f("alloc_order"), _f("fallback_order"), _opt("pageblock_order"),
        _f("alloc_migratetype"), _f("fallback_migratetype"), _opt("fragmenting"), _opt("change_ownership"),
    ),
}

#: names before "mm: tracepoint: rename page-free events" (Konstantin Khlebnikov, 3.3) -> current
LEGACY_EVENT_NAMES = {"mm_page_free_direct": "mm_page_free", "mm_pagevec_free": "mm_page_free_batched"}

#: typed columns filled from kmem fields -> Arrow type
INT_COLUMNS: dict[str, pa.DataType] = {
    "pfn": pa.int64(),
    "order": pa.int8(),
    "migratetype": pa.int8(),
    "alloc_order": pa.int8(),
    "fallback_order": pa.int8(),
    "pageblock_order": pa.int8(),
    "alloc_migratetype": pa.int8(),
    "fallback_migratetype": pa.int8(),
}
BOOL_COLUMNS = ("percpu_refill", "fragmenting", "change_ownership")

_DICT = pa.dictionary(pa.int32(), pa.string())

#: the events table; rows ordered by (ts_ns, seq)
SCHEMA = pa.schema(
    [
        pa.field("ts_ns", pa.int64(), nullable=False),  # integer ns (raw counts for non-ns clocks)
        pa.field("seq", pa.int64(), nullable=False),  # input order over all inputs
        pa.field("src", pa.int16(), nullable=False),  # index into metadata "sources"
        pa.field("line", pa.int64(), nullable=False),  # 1-based line in the decompressed source
        pa.field("cpu", pa.int16(), nullable=False),
        pa.field("pid", pa.int32(), nullable=False),
        pa.field("tgid", pa.int32()),  # null when the TGID column is absent or "-------"
        pa.field("comm", _DICT),
        pa.field("lat_flags", _DICT),  # irq-info flags ("d..4."), null when not printed
        pa.field("event", _DICT, nullable=False),
        *[pa.field(name, typ) for name, typ in INT_COLUMNS.items()],
        pa.field("gfp", _DICT),  # gfp_flags exactly as printed
        pa.field("gfp_mask", pa.uint64()),  # decoded with the 6.1 table; null if a name is unknown
        *[pa.field(name, pa.bool_()) for name in BOOL_COLUMNS],
        pa.field("failed", pa.bool_()),  # mm_page_alloc that returned NULL (page NULL or pfn 0)
        pa.field("fields", pa.string()),  # raw field text of events ptebench does not type
        pa.field("stack_id", pa.int32()),  # into the stacks table; null when no stack followed
    ]
)

#: migratetype numbering of Linux >= 4.4 (include/linux/mmzone.h); CMA absent without CONFIG_CMA
MIGRATETYPES_4_4 = {0: "Unmovable", 1: "Movable", 2: "Reclaimable", 3: "HighAtomic", 4: "Isolate"}

#: leading stack frames that belong to the tracer, not to the traced code
TRACING_FRAME_PREFIXES = (
    "trace_event_raw_event_",
    "perf_trace_",
    "__traceiter_",
    "__bpf_trace_",
    "trace_call_bpf",
    "kprobe_",
    "ftrace_",
    "__ftrace_trace_stack",
    "__trace_stack",
    "trace_buffer_unlock_commit",
    "event_triggers_call",
    "stacktrace_trigger",
    "0x",  # ftrace trampoline: a bare address
)


def is_tracing_frame(symbol: str) -> bool:
    return symbol.startswith(TRACING_FRAME_PREFIXES)
