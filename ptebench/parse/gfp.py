"""GFP flag strings as the kernel prints them, and their numeric masks.

``mm_page_alloc`` prints its mask with ``show_gfp_flags()`` (include/trace/events/mmflags.h):
``__print_flags(flags, "|", __def_gfpflag_names)``, which walks the table in order,
prints every entry whose bits are all set and clears them, and appends any leftover
bits as ``0x...``; a zero mask prints ``none``.  Decoding a printed string is the
reverse: OR the table values of its names.  The values below are those of Linux 6.1
(include/linux/gfp_types.h) for a kernel without CONFIG_KASAN_HW_TAGS or
CONFIG_LOCKDEP (so ``__GFP_SKIP_*`` and ``__GFP_NOLOCKDEP`` are 0), which is the
Debian 6.1 build the bundled captures come from.  Other eras are issue #3's.
"""

from __future__ import annotations

import re

_HEX = re.compile(r"^0x[0-9a-fA-F]{1,16}$")
_DECIMAL = re.compile(r"^[0-9]{1,20}$")

# include/linux/gfp_types.h, Linux 6.1: ___GFP_* bit values
_BITS_6_1: dict[str, int] = {
    "__GFP_DMA": 0x01,
    "__GFP_HIGHMEM": 0x02,
    "__GFP_DMA32": 0x04,
    "__GFP_MOVABLE": 0x08,
    "__GFP_RECLAIMABLE": 0x10,
    "__GFP_HIGH": 0x20,
    "__GFP_IO": 0x40,
    "__GFP_FS": 0x80,
    "__GFP_ZERO": 0x100,
    "__GFP_ATOMIC": 0x200,
    "__GFP_DIRECT_RECLAIM": 0x400,
    "__GFP_KSWAPD_RECLAIM": 0x800,
    "__GFP_WRITE": 0x1000,
    "__GFP_NOWARN": 0x2000,
    "__GFP_RETRY_MAYFAIL": 0x4000,
    "__GFP_NOFAIL": 0x8000,
    "__GFP_NORETRY": 0x10000,
    "__GFP_MEMALLOC": 0x20000,
    "__GFP_COMP": 0x40000,
    "__GFP_NOMEMALLOC": 0x80000,
    "__GFP_HARDWALL": 0x100000,
    "__GFP_THISNODE": 0x200000,
    "__GFP_ACCOUNT": 0x400000,
    "__GFP_ZEROTAGS": 0x800000,
}


def _composites_6_1(b: dict[str, int]) -> dict[str, int]:
    """The GFP_* combinations of include/linux/gfp_types.h, Linux 6.1."""
    reclaim = b["__GFP_DIRECT_RECLAIM"] | b["__GFP_KSWAPD_RECLAIM"]
    user = reclaim | b["__GFP_IO"] | b["__GFP_FS"] | b["__GFP_HARDWALL"]
    highuser = user | b["__GFP_HIGHMEM"]
    highuser_movable = highuser | b["__GFP_MOVABLE"]  # | __GFP_SKIP_KASAN_* (0 here)
    transhuge_light = (highuser_movable | b["__GFP_COMP"] | b["__GFP_NOMEMALLOC"] | b["__GFP_NOWARN"]) & ~reclaim
    kernel = reclaim | b["__GFP_IO"] | b["__GFP_FS"]
    return {
        "GFP_TRANSHUGE": transhuge_light | b["__GFP_DIRECT_RECLAIM"],
        "GFP_TRANSHUGE_LIGHT": transhuge_light,
        "GFP_HIGHUSER_MOVABLE": highuser_movable,
        "GFP_HIGHUSER": highuser,
        "GFP_USER": user,
        "GFP_KERNEL_ACCOUNT": kernel | b["__GFP_ACCOUNT"],
        "GFP_KERNEL": kernel,
        "GFP_NOFS": reclaim | b["__GFP_IO"],
        "GFP_ATOMIC": b["__GFP_HIGH"] | b["__GFP_ATOMIC"] | b["__GFP_KSWAPD_RECLAIM"],
        "GFP_NOIO": reclaim,
        "GFP_NOWAIT": b["__GFP_KSWAPD_RECLAIM"],
        "GFP_DMA": b["__GFP_DMA"],
        "GFP_DMA32": b["__GFP_DMA32"],
        "__GFP_RECLAIM": reclaim,
    }


# __def_gfpflag_names, include/trace/events/mmflags.h, Linux 6.1: the print order
_ORDER_6_1 = (
    "GFP_TRANSHUGE GFP_TRANSHUGE_LIGHT GFP_HIGHUSER_MOVABLE GFP_HIGHUSER GFP_USER GFP_KERNEL_ACCOUNT "
    "GFP_KERNEL GFP_NOFS GFP_ATOMIC GFP_NOIO GFP_NOWAIT GFP_DMA __GFP_HIGHMEM GFP_DMA32 __GFP_HIGH "
    "__GFP_ATOMIC __GFP_IO __GFP_FS __GFP_NOWARN __GFP_RETRY_MAYFAIL __GFP_NOFAIL __GFP_NORETRY "
    "__GFP_COMP __GFP_ZERO __GFP_NOMEMALLOC __GFP_MEMALLOC __GFP_HARDWALL __GFP_THISNODE "
    "__GFP_RECLAIMABLE __GFP_MOVABLE __GFP_ACCOUNT __GFP_WRITE __GFP_RECLAIM __GFP_DIRECT_RECLAIM "
    "__GFP_KSWAPD_RECLAIM __GFP_ZEROTAGS"
).split()

_ALL_6_1 = {**_BITS_6_1, **_composites_6_1(_BITS_6_1)}
GFP_TABLE_6_1: tuple[tuple[str, int], ...] = tuple((name, _ALL_6_1[name]) for name in _ORDER_6_1)
GFP_TABLE_ID = "linux-6.1"

#: name -> mask for decoding; ``none`` is the zero mask
GFP_NAMES: dict[str, int] = dict(GFP_TABLE_6_1)


def gfp_mask(text: str) -> int | None:
    """The numeric mask of a printed gfp string, or None when a name is unknown.

    ``"GFP_KERNEL|__GFP_ZERO"`` -> 0xdc0; ``"none"`` -> 0; a numeric ``0x...``
    part (leftover bits, or a whole mask printed by a user-space tool) is taken as is, and so
    is a decimal number (libtraceevent prints an unsigned ``gfp_t`` field that way under
    ``[FAILED TO PARSE]`` and ``trace-cmd report -R``: ``tep_print_field_content()``).
    """
    if text == "none":
        return 0
    if _DECIMAL.match(text):
        return int(text) if int(text) < 1 << 64 else None
    mask = 0
    for part in text.split("|"):
        if part.startswith("0x"):
            if not _HEX.match(part):
                return None
            mask |= int(part, 16)
            continue
        value = GFP_NAMES.get(part)
        if value is None:
            return None
        mask |= value
    return mask


def gfp_string(mask: int) -> str:
    """Render a mask exactly as ``show_gfp_flags()`` does (greedy in table order)."""
    if mask == 0:
        return "none"
    parts = []
    for name, value in GFP_TABLE_6_1:
        if value and mask & value == value:
            parts.append(name)
            mask &= ~value
    if mask:
        parts.append(hex(mask))
    return "|".join(parts)


def has_flag(mask: int, name: str) -> bool:
    """True when every bit of the named flag or combination is set in ``mask``."""
    value = GFP_NAMES[name]
    return mask & value == value
