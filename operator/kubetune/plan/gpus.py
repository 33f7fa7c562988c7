"""GPUs the planner knows: the memory torch can use, and the node label value.

``memory_mib`` is what torch reports as the device's total capacity (``torch.cuda.
get_device_properties(i).total_memory``, printed in every CUDA OOM message as "GPU 0 has a total
capacity of X GiB"): the memory the driver hands to CUDA. It is below the marketing size and below
``nvidia-smi --query-gpu=memory.total`` (driver- and ECC-reserved memory). The CUDA context is then
allocated inside it (the planner's own "CUDA context" term).

Source of each figure, beside it: "oom:" a public OOM message naming that GPU (owner/repo#issue,
the lowest value seen where several differ, since the planner must not promise memory that is not
there); "derived:" no public torch figure was found, so nvidia-smi's memory.total less 2% (the cited
parts read 0.7-1.6% under it). Measure yours with ``python -c "import torch;
print(torch.cuda.get_device_properties(0).total_memory // 2**20)"`` and set
``spec.resources.gpuMemory`` or the chart's ``gpuMemoryByProduct``.
The product strings are the values of the ``nvidia.com/gpu.product`` node label set by NVIDIA GPU
Feature Discovery.
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
    # derived: nvidia-smi 143771 MiB less 2%
    Gpu("H200", 140895, ("NVIDIA-H200", "NVIDIA-H200-141GB-HBM3e")),
    # oom: 79.11 GiB, vllm-project/vllm#27508 (H100)
    Gpu("H100-80GB", 81008, ("NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-SXM5-80GB", "NVIDIA-H100-PCIe")),
    # derived: nvidia-smi 95830 MiB less 2%
    Gpu("H100-NVL", 93913, ("NVIDIA-H100-NVL",)),
    # derived: nvidia-smi 97871 MiB less 2%
    Gpu("GH200", 95913, ("NVIDIA-GH200-480GB",), in_image=False),  # arm64 host; the image is amd64
    # derived: nvidia-smi 183359 MiB less 2%
    Gpu("B200", 179691, ("NVIDIA-B200",)),
    # oom: 79.25 GiB, levihsu/OOTDiffusion#235 (A100 80GB); 79.35 GiB in OSU-NLP-Group/TableLlama#10
    Gpu("A100-80GB", 81152, ("NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-80GB-PCIe")),
    # oom: 39.50 GiB, TianheWu/CoSeR#10 (A100 40GB)
    Gpu("A100-40GB", 40448, ("NVIDIA-A100-SXM4-40GB", "NVIDIA-A100-PCIE-40GB")),
    # the L40 figure (same nvidia-smi memory.total, 46068 MiB): QwenLM/Qwen3-VL#2097
    Gpu("L40S", 45465, ("NVIDIA-L40S",)),
    # oom: 44.40 GiB, QwenLM/Qwen3-VL#2097 (L40)
    Gpu("L40", 45465, ("NVIDIA-L40",)),
    # derived: nvidia-smi 49140 MiB less 2%
    Gpu("A6000", 48157, ("NVIDIA-RTX-A6000",)),
    # derived: nvidia-smi 23028 MiB less 2%
    Gpu("A10G", 22567, ("NVIDIA-A10G",)),
    # derived: nvidia-smi 23028 MiB less 2%
    Gpu("A10", 22567, ("NVIDIA-A10",)),
    # derived: nvidia-smi 23034 MiB less 2%
    Gpu("L4", 22573, ("NVIDIA-L4",)),
    # oom: 23.61 GiB, pinokiofactory/flux-webui#11 (RTX 4090); 23.64 GiB in TMElyralab/MuseTalk#76
    Gpu("RTX-4090", 24176, ("NVIDIA-GeForce-RTX-4090",)),
    # derived: nvidia-smi 24576 MiB less 2%
    Gpu("RTX-3090", 24084, ("NVIDIA-GeForce-RTX-3090",)),
    # oom: 31.74 GiB, haotian-liu/LLaVA#812 (V100 32GB)
    Gpu(
        "V100-32GB", 32501, ("Tesla-V100-SXM2-32GB", "Tesla-V100-PCIE-32GB"), bf16=False, in_image=False
    ),  # Volta: CUDA 13 dropped it
    # derived: nvidia-smi 16384 MiB less 2%
    Gpu("V100-16GB", 16056, ("Tesla-V100-SXM2-16GB", "Tesla-V100-PCIE-16GB"), bf16=False, in_image=False),
    # derived: nvidia-smi 15360 MiB less 2%
    Gpu("T4", 15052, ("Tesla-T4",), bf16=False, in_image=False),  # Turing sm_75: no code built for it
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


def product_memory_table() -> dict[str, str]:
    """nvidia.com/gpu.product value -> memory as a Kubernetes quantity, for every GPU kubetune knows
    (memory does not depend on the image; ``Gpu.in_image`` says which ones the stock image runs on)."""
    return {p: f"{g.memory_mib}Mi" for g in GPUS for p in g.products}


def _norm(s: str) -> str:
    return (
        "".join(c for c in s.lower() if c.isalnum()).replace("nvidia", "").replace("tesla", "").replace("geforce", "")
    )
