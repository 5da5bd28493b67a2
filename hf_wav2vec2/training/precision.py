"""Whether bf16 autocast pays on the CPU a run uses.

CPUs with bf16 matrix instructions (AVX512-BF16 or AMX: recent Intel Xeons) run torch's bf16 matmuls and
convolutions natively through oneDNN, faster than fp32. Other CPUs (AVX2 only) have no bf16 instructions, and torch
falls back to generic code several times slower than fp32 (docs/performance.md). The Makefile chooses bf16 with
:func:`cpu_computes_bf16`; the training scripts and ``evaluate_ctc.py --dtype bfloat16`` warn with
:func:`emulated_bf16_warning`.
"""

from __future__ import annotations

import torch


def cpu_computes_bf16() -> bool:
    """True where this CPU has bf16 matrix instructions (AVX512-BF16 or AMX tiles)."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def emulated_bf16_warning(device_type: str, bf16: bool) -> str | None:
    """The warning a run should log when it computes in bf16 (autocast or bf16 weights) on a CPU without bf16
    instructions; None otherwise."""
    if not bf16 or device_type != "cpu" or cpu_computes_bf16():
        return None
    return ("bf16 on a CPU without bf16 instructions (no AVX512-BF16 or AMX): torch emulates its bf16 matrix "
            "products, so this run will be several times slower than in fp32; use fp32 on this machine")
