"""What the host CPU offers the kernels: its LLVM name and feature flags, as Numba will compile for it.

`host_has(*features)` is True only on x86-64 with Numba's JIT on and compiling for the host CPU
(not a generic NUMBA_CPU_NAME build), and when LLVM reports every named feature (e.g. "avx2",
"avx512vnni"). The dispatcher (refq.kernels.dispatch) and each fast kernel's AVAILABLE flag use it.

References: LLVM, "llvm::sys::getHostCPUFeatures"; Numba documentation, "Environment variables"
(NUMBA_CPU_NAME, NUMBA_DISABLE_JIT).
"""
from __future__ import annotations

import functools
import platform

import numba
from llvmlite import binding as llvm_binding

REPORTED = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512vnni", "avxvnni", "avx512bf16")


def jit_targets_host() -> bool:
    """True on x86-64 when Numba compiles (JIT on) for the host CPU."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    return not numba.config.DISABLE_JIT and numba.config.CPU_NAME in (None, "host")


@functools.lru_cache(maxsize=None)
def host_features() -> dict[str, bool]:
    """LLVM's feature flags of the host CPU (empty off x86-64)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return {}
    return {name: bool(on) for name, on in llvm_binding.get_host_cpu_features().items()}


def host_has(*features: str) -> bool:
    """True when Numba compiles for this x86-64 host and its CPU has every one of `features`."""
    return jit_targets_host() and all(host_features().get(f, False) for f in features)


def describe() -> str:
    """One line: the LLVM CPU name and the SIMD features the kernels care about, e.g. 'znver5: avx2 avx512vnni'."""
    on = [f for f in REPORTED if host_features().get(f, False)]
    return f"{llvm_binding.get_host_cpu_name()}: {' '.join(on) or 'no AVX2/AVX-512'}"
