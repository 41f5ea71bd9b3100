"""The torch-vs-driver cases doctor and unpack are checked against resolve with (one table for both)."""

from __future__ import annotations

from envbuild.models import Gpu, Profile, Resolution

# (torch, CUDA, driver, driver CUDA, GPU, cc, Python): doctor and unpack say what resolve says of each
VERDICT_CASES = [
    ("2.6.0", "12.4", "535.104.05", "12.2", "NVIDIA GeForce RTX 4090", "8.9", "3.11"),  # 12.x minor compat
    ("1.10.0", "11.3", "418.67", "10.1", "Tesla V100-SXM2-32GB", "7.0", "3.9"),  # 418 < 450.80.02
    ("2.9.0", "13.0", "570.86.10", "12.8", "NVIDIA H100 80GB HBM3", "9.0", "3.11"),  # 13.x needs >= 580
]


def _resolved(torch: str, cuda: str, driver: str, driver_cuda: str, gpu: str, cc: str, python: str
              ) -> tuple[Profile, Resolution, str]:
    """The target, resolve's answer for torch==X with that CUDA, and the CUDA major's minor-compat floor."""
    from envbuild.matrix import load_matrix
    from envbuild.resolve import resolve

    prof = Profile(gpus=(Gpu(gpu, cc),), driver_version=driver, driver_cuda_version=driver_cuda,
                   python_version=python)
    floor = load_matrix().compat_min_driver(cuda)
    assert floor
    return prof, resolve([f"torch=={torch}"], prof, cuda=f"=={cuda}"), floor
