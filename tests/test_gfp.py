"""gfp strings as the 6.1 kernel prints them (show_gfp_flags) <-> masks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptebench.parse.gfp import GFP_NAMES, gfp_mask, gfp_string, has_flag

# strings seen in the bundled 6.1 captures, with masks from include/linux/gfp_types.h
KNOWN = {
    "GFP_KERNEL_ACCOUNT|__GFP_ZERO": 0x400DC0,
    "GFP_HIGHUSER_MOVABLE|__GFP_COMP|__GFP_ZERO": 0x140DCA,
    "GFP_KERNEL": 0xCC0,
    "GFP_NOWAIT|__GFP_NOWARN": 0x2800,
    "GFP_TRANSHUGE_LIGHT|__GFP_NORETRY|__GFP_THISNODE": 0x3D20CA,
    "GFP_ATOMIC": 0xA20,
    "none": 0,
    "GFP_KERNEL|0x10000000": 0x10000CC0,
}


@pytest.mark.parametrize(("text", "mask"), KNOWN.items())
def test_known(text, mask):
    assert gfp_mask(text) == mask
    assert gfp_string(mask) == text


def test_unknown_name():
    assert gfp_mask("GFP_KERNEL|__GFP_BOGUS") is None
    assert gfp_mask("0xzz") is None


def test_has_flag():
    assert has_flag(0xCC0, "GFP_KERNEL") and not has_flag(0xCC0, "__GFP_ZERO")


@settings(max_examples=200, derandomize=True)
@given(st.integers(0, (1 << 24) - 1))
def test_render_then_decode_is_identity(mask):
    assert gfp_mask(gfp_string(mask)) == mask


def test_table_has_every_bit_once():
    bits = {v for v in GFP_NAMES.values() if bin(v).count("1") == 1}  # __GFP_* bits plus GFP_DMA, GFP_DMA32
    assert bits == {1 << b for b in range(24)}
