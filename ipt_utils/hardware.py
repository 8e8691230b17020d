"""What a benchmark result records about the machine it ran on (results/bench/*.json)."""
from __future__ import annotations

import os
import platform
import sys


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(with_torch: bool = True, packages: tuple[str, ...] = ()) -> dict:
    """Platform, CPU model and count, load average now; torch threads and GPUs; package versions."""
    info = {"platform": platform.platform(), "python": sys.version.split()[0], "cpu_model": cpu_model(),
            "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}
    if with_torch:
        import torch

        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                    cuda=torch.cuda.is_available())
        if info["cuda"]:
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    if packages:
        from importlib import metadata

        for pkg in packages:
            try:
                info[pkg] = metadata.version(pkg)
            except metadata.PackageNotFoundError:
                pass
    try:
        info["loadavg_at_start"] = os.getloadavg()
    except OSError:
        pass
    return info
