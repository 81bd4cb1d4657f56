#!/usr/bin/env python3
"""Tests/DarkroomTests/Fixtures/dtypes.safetensors: one small tensor of known values stored as
F32, F16 and BF16, plus I64 ids, so the Swift safetensors reader can check its widening code
against PyTorch's rounding (round-to-nearest-even) bit for bit.

    f32                     F32  [4, 5]  the values below, exactly as float32
    f16                     F16  [4, 5]  torch .half() of f32
    bf16                    BF16 [4, 5]  torch .bfloat16() of f32
    f32_expected_from_f16   F32  [4, 5]  f16 widened back to float32 (exact)
    f32_expected_from_bf16  F32  [4, 5]  bf16 widened back to float32 (exact)
    i64                     I64  [2, 4]  token-id-like values incl. negative and > 2^32
    scalar_f32              F32  []      a 0-d tensor (shape [] in the header)

Run from anywhere:  Tools/.venv/bin/python Tools/fixtures_dtypes.py
"""
import os

import torch
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "DarkroomTests", "Fixtures", "dtypes.safetensors")

VALUES = [
    0.0, -0.0, 1.0, -1.0, 1.0 / 3.0,
    -2.0 / 3.0, 0.1, 3.140625, 65504.0, -65504.0,       # 65504 = largest finite f16
    1e-5,        # f16 subnormal (min normal f16 is 6.1e-5)
    5.960464477539063e-08,  # 2^-24: smallest f16 subnormal
    2e-8,        # below half the smallest f16 subnormal: f16 rounds it to +0
    1e-39,       # float32 subnormal (also a bf16 subnormal)
    -1.5e-41,    # tiny negative float32 subnormal
    1.00390625,  # 1 + 2^-8: bf16 tie, rounds to even (1.0)
    1.01171875,  # 1 + 3*2^-8: bf16 tie, rounds to even (1.015625)
    12345.678, -0.000123, 2.5e4,
]


def main():
    f32 = torch.tensor(VALUES, dtype=torch.float32).reshape(4, 5)
    f16 = f32.to(torch.float16)
    bf16 = f32.to(torch.bfloat16)
    tensors = {
        "f32": f32,
        "f16": f16,
        "bf16": bf16,
        "f32_expected_from_f16": f16.to(torch.float32),
        "f32_expected_from_bf16": bf16.to(torch.float32),
        "i64": torch.tensor([[49406, 320, 49407, 0], [-1, 2**40 + 7, -(2**62), 2**63 - 1]], dtype=torch.int64),
        "scalar_f32": torch.tensor(0.5, dtype=torch.float32),
    }
    assert torch.isfinite(tensors["f32_expected_from_f16"]).all()
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_file(tensors, OUT, metadata={"format": "pt"})
    print(f"wrote {os.path.relpath(OUT, ROOT)} ({os.path.getsize(OUT)} bytes)")
    for i, v in enumerate(f32.flatten().tolist()):
        print(f"  {v!r:>24} f16->{tensors['f32_expected_from_f16'].flatten()[i].item()!r:>24} "
              f"bf16->{tensors['f32_expected_from_bf16'].flatten()[i].item()!r:>24}")


if __name__ == "__main__":
    main()
