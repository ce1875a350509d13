"""Numba integer GEMMs (C = A @ B.T, nn.Linear layout) and their plain-NumPy twins.

    from refq.kernels import gemm_packed, pack_int8, quantize_per_token
    w = pack_int8(q_w)                                        # int8 [N, D] weights, packed once per layer
    q_x, s_x = quantize_per_token(x)                          # float32 [T, D] -> int8 [T, D], float32 [T]
    y = dequant_epilogue(gemm_packed(q_x, w), s_x, s_w, bias)  # int8 [T, D] x [N, D] -> float32 [T, N]

Modules: `dispatch` (which kernel runs, packed weights, the public GEMMs), `vnni` (AVX-512 VNNI
vpdpbusd micro-kernel), `avx2` (AVX2 vpmaddwd micro-kernel), `int8_gemm` / `int4_gemm` (portable
kernels, the dequant epilogue), `quantize_act` (per-token activation codes), `reference` (input checks,
K limits, NumPy twins), `cpu` (host features). Kernels compile on first call (cached on disk after).
"""
from refq.kernels.dispatch import (PackedWeights, gemm_int4, gemm_int4_dequant, gemm_int8, gemm_int8_dequant,
                                   gemm_packed, pack_int4, pack_int8, select)
from refq.kernels.int4_gemm import gemm_int4_plain, gemm_int4_tiled
from refq.kernels.int8_gemm import dequant_epilogue, gemm_int8_plain, gemm_int8_tiled
from refq.kernels.quantize_act import quantize_per_token, quantize_per_token_ref
from refq.kernels.reference import (K_MAX_INT4, K_MAX_INT8, dequant_epilogue_ref, gemm_int4_dequant_ref,
                                    gemm_int4_ref, gemm_int8_dequant_ref, gemm_int8_ref)

__all__ = [
    "K_MAX_INT4", "K_MAX_INT8", "PackedWeights", "dequant_epilogue", "dequant_epilogue_ref", "gemm_int4",
    "gemm_int4_dequant", "gemm_int4_dequant_ref", "gemm_int4_plain", "gemm_int4_ref", "gemm_int4_tiled", "gemm_int8",
    "gemm_int8_dequant", "gemm_int8_dequant_ref", "gemm_int8_plain", "gemm_int8_ref", "gemm_int8_tiled",
    "gemm_packed", "pack_int4", "pack_int8", "quantize_per_token", "quantize_per_token_ref", "select",
]
