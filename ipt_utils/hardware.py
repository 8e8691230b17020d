"""What a result records about the machine it ran on (results/bench/*.json, the run manifest)."""
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


def device_info() -> dict:
    """Platform, CPU model and count; whether CUDA is there and which GPUs (when torch is installed)."""
    info = {"platform": platform.platform(), "cpu_model": cpu_model(),
            "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}
    try:
        import torch
    except ImportError:
        return info
    info["cuda"] = torch.cuda.is_available()
    if info["cuda"]:
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def package_versions(packages) -> dict:
    """Installed versions of `packages` (absent ones left out)."""
    from importlib import metadata

    versions = {}
    for pkg in packages:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return versions


def describe(with_torch: bool = True, packages: tuple[str, ...] = ()) -> dict:
    """A benchmark's hardware record: device_info, python, torch version and threads, package
    versions, load average now."""
    info = {"python": sys.version.split()[0], **device_info()}
    if with_torch:
        import torch

        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    info.update(package_versions(packages))
    try:
        info["loadavg_at_start"] = os.getloadavg()
    except OSError:
        pass
    return info
