"""Each fast GEMM kernel's machine code uses the instruction family it is built for.

AVX2 kernel: vpmaddwd (int16 pairs). On CPUs with AVX-512 VNNI or AVX-VNNI, LLVM fuses each
vpmaddwd + vpaddd pair into one vpdpwssd, so the test counts both forms of the same multiply-add.
VNNI kernel: vpdpbusd (u8 x s8 quads), 16 per k-quad in the 8 x 32 tile, and no int16 widening."""
import os
import subprocess
import sys

import pytest

from refq.kernels import avx2, vnni

SCRIPT = r"""
import re, sys, numpy as np
from collections import Counter
from refq.kernels import avx2, vnni
which = sys.argv[1]
a, b = np.ones((8, 64), np.int8), np.ones((32, 64), np.int8)
if which == "avx2":
    avx2.gemm_int8_avx2(a, b)
    fns = [avx2._matmul_panels]
else:
    vnni.gemm_int8_vnni(a, b)
    vnni.gemm_int4_vnni(a, np.zeros((32, 32), np.uint8), 64)
    fns = [vnni._tiles_int8, vnni._tiles_int4]
for fn in fns:
    asm = "\n".join(fn.inspect_asm().values())
    ops = Counter(re.findall(r"^\s+(?:\{vex\}\s+)?(v[a-z0-9]+)\s", asm, re.M))  # {vex}: AVX-VNNI encoding
    print(" ".join(f"{k}={ops[k]}" for k in ("vpmaddwd", "vpaddd", "vpdpwssd", "vpdpbusd", "vpbroadcastd",
                                            "vpmulld", "vpmovsxbw", "vpandd", "vpandq", "vpand", "vpsrld")))
"""


def _counts(tmp_path, which: str) -> list[dict]:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))  # an empty cache: compile, so the assembly exists
    out = subprocess.run([sys.executable, "-c", SCRIPT, which], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return [{k: int(v) for k, v in (kv.split("=") for kv in line.split())} for line in out.stdout.splitlines()]


@pytest.mark.skipif(not avx2.AVAILABLE, reason="no AVX2 on this CPU: the portable kernel runs instead")
def test_avx2_kernel_inner_loop_is_vpmaddwd(tmp_path):
    (counts,) = _counts(tmp_path, "avx2")
    unfused = min(counts["vpmaddwd"], counts["vpaddd"])  # vpmaddwd then vpaddd into the accumulator
    assert unfused + counts["vpdpwssd"] >= 8  # one 4 x 16 tile: 8 multiply-adds of 16 int16 pairs per k-pair
    assert counts["vpbroadcastd"] >= 4 and counts["vpmulld"] == 0


@pytest.mark.skipif(not vnni.AVAILABLE, reason="no AVX-512 VNNI on this CPU: the AVX2 or portable kernel runs")
def test_vnni_kernel_inner_loop_is_vpdpbusd(tmp_path):
    int8, int4 = _counts(tmp_path, "vnni")
    assert int8["vpdpbusd"] >= 16  # 8 x 32 tile: 8 rows x 2 halves per k-quad
    assert int4["vpdpbusd"] >= 32  # two k-quads (low and high nibbles) per loaded byte
    assert int4["vpsrld"] >= 1 and int4["vpandd"] + int4["vpandq"] + int4["vpand"] >= 2  # nibbles split in-loop
    for counts in (int8, int4):
        assert counts["vpmulld"] == 0 and counts["vpmaddwd"] == 0 and counts["vpmovsxbw"] == 0
