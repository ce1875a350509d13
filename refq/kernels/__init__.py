"""Numba integer GEMMs (C = A @ B.T, nn.Linear layout) and their plain-NumPy twins.

    from refq.kernels import gemm_int8_dequant, quantize_per_token
    q_x, s_x = quantize_per_token(x)                          # float32 [T, D] -> int8 [T, D], float32 [T]
    y = gemm_int8_dequant(q_x, q_w, s_x, s_w, bias)           # int8 [T, D] x int8 [N, D] -> float32 [T, N]

Modules: `int8_gemm` (int8 x int8 -> int32 and the dequant epilogue), `int4_gemm` (int8 x packed int4),
`avx2` (the vpmaddwd micro-kernel both use on AVX2 CPUs), `quantize_act` (per-token activation codes),
`reference` (input checks, K limits, NumPy twins). Kernels compile on first call (cached on disk after).
"""
from refq.kernels.int4_gemm import gemm_int4, gemm_int4_dequant, gemm_int4_plain, gemm_int4_tiled
from refq.kernels.int8_gemm import dequant_epilogue, gemm_int8, gemm_int8_dequant, gemm_int8_plain, gemm_int8_tiled
from refq.kernels.quantize_act import quantize_per_token, quantize_per_token_ref
from refq.kernels.reference import (K_MAX_INT4, K_MAX_INT8, dequant_epilogue_ref, gemm_int4_dequant_ref,
                                    gemm_int4_ref, gemm_int8_dequant_ref, gemm_int8_ref)

__all__ = [
    "K_MAX_INT4", "K_MAX_INT8", "dequant_epilogue", "dequant_epilogue_ref", "gemm_int4", "gemm_int4_dequant",
    "gemm_int4_dequant_ref", "gemm_int4_plain", "gemm_int4_ref", "gemm_int4_tiled", "gemm_int8", "gemm_int8_dequant",
    "gemm_int8_dequant_ref", "gemm_int8_plain", "gemm_int8_ref", "gemm_int8_tiled", "quantize_per_token",
    "quantize_per_token_ref",
]
