"""What the machine offers a training job: bf16 support, autocast, the device, a free port
(the threads a job may use are workers.default_threads, which the frame cache needs too).

Measured on the project's 2-core AVX-512/BF16 CPUs (docs/lab-log.md, "Speed"): bf16
autocast makes a JUMP step 1.1-1.6x faster and CDNA/SV2P 1.3x, with losses that track fp32;
a second thread gives 1.6-1.8x on a quiet machine, but more threads than free cores (a
loader worker, another job) give 5-20x outliers. So threads default to the cores free to
this job (workers.default_threads), and the frame cache removes the loader worker.
"""
from __future__ import annotations

import contextlib
import os

import torch

from jumpbench.errors import JumpbenchError


def free_port() -> int:
    """A TCP port free on this machine now, for the rendezvous of a data-parallel run's processes."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_has_bf16() -> bool:
    """Native bf16 arithmetic on this CPU (AVX512-BF16 or AMX), from /proc/cpuinfo's flags."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def describe(device: torch.device) -> str:
    """The machine a leg ran on, in a few words: the GPU's name, or the CPU's model name with its
    widest vector extension ("AMD EPYC, AVX-512 BF16"): the facts that set a step's speed."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and not name:
                    name = " ".join(line.split(":", 1)[1].split())
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = next((label for flag, label in (("avx512_bf16", "AVX-512 BF16"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))
                if flag in flags), "")
    return ", ".join(x for x in (name or "unknown CPU", isa, f"{os.cpu_count()} cores") if x)


def has_bf16(device: torch.device) -> bool:
    """Whether the device computes bf16 natively (CUDA GPUs that support it; CPUs with
    AVX512-BF16 or AMX)."""
    return torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_bf16()


def resolve_precision(precision: str, device: torch.device, compiled: bool = False) -> str:
    """"auto" -> "bf16" on CPUs that compute it natively (1.3-1.7x fp32 per step there); on a
    CUDA GPU "bf16" only with a compiled loss (`compiled`), else "fp32" (with TF32): at this
    project's sizes a GPU step is bound by kernel launches and eager bf16 autocast measured
    10-30% slower than fp32 on an H100, its casts being extra kernels; everywhere else "fp32".
    An explicit "bf16" on hardware without it is refused rather than emulated slowly."""
    has = has_bf16(device)
    if precision == "auto":
        return "bf16" if has and (device.type != "cuda" or compiled) else "fp32"
    if precision == "bf16" and not has:
        raise JumpbenchError(f"train.precision=bf16: this {device.type} has no native bf16 "
                             "(set train.precision=fp32 or auto)")
    return precision


def resumed_precision(started: str | None, started_on: str | None, resolved: str, device: torch.device) -> str:
    """The precision a resumed run goes on in under "auto": the one its checkpoint was trained
    in (`started`, on a `started_on` device type), so that a resume stays exact when "auto" now
    resolves otherwise (a release that changed the rule). `resolved` when the checkpoint does
    not say (older checkpoints), was made on another kind of device (no resume across CPU and
    GPU is exact, and each has its own fastest precision), or says bf16 and this device has none."""
    if started_on != device.type:
        return resolved
    if started == "fp32" or (started == "bf16" and has_bf16(device)):
        return started
    return resolved


def autocast(precision: str, device: torch.device, cache: bool = True):
    """The context a forward pass runs in: bf16 autocast, or nothing for fp32. Models keep
    their losses, KLs and ELBOs in fp32 (they cast before reducing). `cache`: autocast keeps
    the bf16 copies of the weights for the pass (off for a pass captured in a CUDA graph,
    as PyTorch asks)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache)
    return contextlib.nullcontext()


def setup_device(device: torch.device) -> None:
    """TF32 matmuls and convolutions on CUDA (fp32 runs too); nothing on CPUs."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
