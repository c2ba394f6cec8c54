"""Allocator designs as small named policies over one substrate (the modeled buddy and direct map).

The simulate engine (``engine/simulate.py``) names no policy. It asks the selected one which
consumers it intercepts; every other request goes straight to the jitted buddy. For an
intercepted consumer it calls the hooks:

- ``alloc(ctx, order, req, cpu, consumer) -> pfn`` picks the pages (or -1 on failure) and
  makes the consumer's direct-map changes itself (``ctx.cpa``). For the kernel's behaviour,
  apply ``ctx.default_action(consumer, "alloc")``.
- ``free(ctx, pfn, order, cpu, consumer)`` takes the pages back, into a cache or to the buddy
  (``ctx.buddy_free``).
- ``shrink(ctx)`` and ``refill(ctx, consumer)`` are the cache's own reclaim and refill,
  called by the policy itself or by the engine at the end of the trace (``shrink``).

Register a policy with :func:`register`; ``ptebench replay --variant NAME`` selects it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ptebench.errors import PtebenchError

REGISTRY: dict[str, type[Policy]] = {}


class Policy:
    """The kernel's own behaviour: no cache, every request to the buddy (the ``none`` baseline)."""

    name: ClassVar[str] = "none"
    description: ClassVar[str] = "no cache: the page allocator as Linux 6.1 has it"
    intercepts: ClassVar[frozenset[str]] = frozenset()

    def alloc(self, ctx: Any, order: int, req: int, cpu: int, consumer: str) -> int:
        pfn = ctx.buddy_alloc(order, req, cpu)
        if pfn >= 0:
            ctx.default_action(consumer, "alloc", pfn, order)
        return pfn

    def free(self, ctx: Any, pfn: int, order: int, cpu: int, consumer: str) -> None:
        ctx.default_action(consumer, "free", pfn, order)
        ctx.buddy_free(pfn, order, cpu)

    def shrink(self, ctx: Any) -> int:
        return 0

    def refill(self, ctx: Any, consumer: str) -> int:
        return 0

    def stats(self) -> dict[str, int]:
        return {}


def register(cls: type[Policy]) -> type[Policy]:
    """Class decorator: make a policy selectable by its ``name``."""
    if not isinstance(getattr(cls, "name", None), str) or not cls.name:
        raise PtebenchError(f"policy {cls!r} has no name")
    REGISTRY[cls.name] = cls
    return cls


def get(name: str) -> Policy:
    if name not in REGISTRY:
        raise PtebenchError(f"unknown variant {name!r}", expected=f"one of {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]()


register(Policy)
