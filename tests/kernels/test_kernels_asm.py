"""The AVX2 GEMM's machine code multiplies with vpmaddwd (int16 pairs), not with scalar or vpmulld code.

On CPUs with AVX-512 VNNI or AVX-VNNI, LLVM fuses each vpmaddwd + vpaddd pair into one vpdpwssd
(multiply int16 pairs and accumulate), so the test counts both forms of the same multiply-add."""
import os
import subprocess
import sys

import pytest

from refq.kernels import avx2

SCRIPT = r"""
import re, numpy as np
from collections import Counter
from refq.kernels import avx2, gemm_int8
gemm_int8(np.ones((8, 64), np.int8), np.ones((16, 64), np.int8))
asm = "\n".join(avx2._matmul_panels.inspect_asm().values())
ops = Counter(re.findall(r"^\s+(?:\{vex\}\s+)?(v[a-z0-9]+)\s", asm, re.M))  # {vex}: AVX-VNNI encoding
print(" ".join(f"{k}={ops[k]}" for k in ("vpmaddwd", "vpaddd", "vpdpwssd", "vpbroadcastd", "vpmulld")))
"""


@pytest.mark.skipif(not avx2.AVAILABLE, reason="no AVX2 on this CPU: the portable kernel runs instead")
def test_avx2_kernel_inner_loop_is_vpmaddwd(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))  # an empty cache: compile, so the assembly exists
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    counts = dict(kv.split("=") for kv in out.stdout.split())
    counts = {k: int(v) for k, v in counts.items()}
    unfused = min(counts["vpmaddwd"], counts["vpaddd"])  # vpmaddwd then vpaddd into the accumulator
    assert unfused + counts["vpdpwssd"] >= 8  # one 4 x 16 tile: 8 multiply-adds of 16 int16 pairs per k-pair
    assert counts["vpbroadcastd"] >= 4 and counts["vpmulld"] == 0
