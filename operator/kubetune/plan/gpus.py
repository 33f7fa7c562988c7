"""GPUs the planner knows: usable memory as the driver reports it, and the node label value.

Memory is what ``nvidia-smi --query-gpu=memory.total`` prints (MiB), which is a
little under the marketing figure. The product strings are the values of the
``nvidia.com/gpu.product`` node label set by NVIDIA GPU Feature Discovery.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024**2
GiB = 1024**3


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_mib: int
    products: tuple[str, ...]
    bf16: bool = True
    # kubetune's trainer image runs on it (CUDA 13.0 code for sm_80/8.x, sm_90, sm_100 + PTX, on an
    # x86-64 host: images/trainer/Dockerfile). False: the planner knows it, the chart's default
    # gpuMemoryByProduct table leaves it out (it needs a spec.image built for it).
    in_image: bool = True

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * MiB


GPUS: tuple[Gpu, ...] = (
    Gpu("H200", 143771, ("NVIDIA-H200", "NVIDIA-H200-141GB-HBM3e")),
    Gpu("H100-80GB", 81559, ("NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-SXM5-80GB", "NVIDIA-H100-PCIe")),
    Gpu("H100-NVL", 95830, ("NVIDIA-H100-NVL",)),
    Gpu("GH200", 97871, ("NVIDIA-GH200-480GB",), in_image=False),  # arm64 host; the image is amd64
    Gpu("B200", 183359, ("NVIDIA-B200",)),
    Gpu("A100-80GB", 81920, ("NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-80GB-PCIe")),
    Gpu("A100-40GB", 40960, ("NVIDIA-A100-SXM4-40GB", "NVIDIA-A100-PCIE-40GB")),
    Gpu("L40S", 46068, ("NVIDIA-L40S",)),
    Gpu("L40", 46068, ("NVIDIA-L40",)),
    Gpu("A6000", 49140, ("NVIDIA-RTX-A6000",)),
    Gpu("A10G", 23028, ("NVIDIA-A10G",)),
    Gpu("A10", 23028, ("NVIDIA-A10",)),
    Gpu("L4", 23034, ("NVIDIA-L4",)),
    Gpu("RTX-4090", 24564, ("NVIDIA-GeForce-RTX-4090",)),
    Gpu("RTX-3090", 24576, ("NVIDIA-GeForce-RTX-3090",)),
    Gpu("V100-32GB", 32768, ("Tesla-V100-SXM2-32GB", "Tesla-V100-PCIE-32GB"), bf16=False, in_image=False),  # Volta: CUDA 13 dropped it
    Gpu("V100-16GB", 16384, ("Tesla-V100-SXM2-16GB", "Tesla-V100-PCIE-16GB"), bf16=False, in_image=False),
    Gpu("T4", 15360, ("Tesla-T4",), bf16=False, in_image=False),  # Turing sm_75: no code built for it
)


def find_gpu(name: str) -> Gpu:
    """A GPU by catalogue name or node-label product, case- and punctuation-insensitive."""
    key = _norm(name)
    for gpu in GPUS:
        if key == _norm(gpu.name) or key in (_norm(p) for p in gpu.products):
            return gpu
    for gpu in GPUS:  # 'h100' alone means the 80GB part
        if _norm(gpu.name).startswith(key):
            return gpu
    raise KeyError(f"unknown GPU {name!r}; known: {', '.join(g.name for g in GPUS)} (or give --gpu-memory GiB)")


def product_memory_table(*, in_image_only: bool = True) -> dict[str, str]:
    """nvidia.com/gpu.product value -> memory as a Kubernetes quantity. By default the Helm
    default table: the GPUs kubetune's trainer image runs on. ``in_image_only=False``: every GPU
    kubetune knows (the CLI's prediction, for jobs that bring a spec.image built for the others)."""
    return {p: f"{g.memory_mib}Mi" for g in GPUS if g.in_image or not in_image_only for p in g.products}


def _norm(s: str) -> str:
    return "".join(c for c in s.lower() if c.isalnum()).replace("nvidia", "").replace("tesla", "").replace("geforce", "")
