"""Small LLVM IR helpers shared by the hand-written micro-kernels (refq.kernels.avx2, refq.kernels.vnni).

References: llvmlite documentation, "IR builder".
"""
from __future__ import annotations

from llvmlite import ir

I64 = ir.IntType(64)


def i64(value: int) -> ir.Constant:
    """An LLVM i64 constant."""
    return ir.Constant(I64, value)


def vector_at(builder, data, index, vty):
    """IR: pointer to a vector of type `vty` starting at element data[index]."""
    return builder.bitcast(builder.gep(data, [index]), vty.as_pointer())
