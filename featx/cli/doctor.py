"""What ONNX Runtime can use here: packages, providers, CUDA, CPU features."""

from __future__ import annotations

import ctypes
import functools
import re
from importlib import metadata
from pathlib import Path

from ..machine import has_vnni
from ..engine.runtime import cuda_status, default_threads, resolve_providers


def installed_ort_packages() -> list[str]:
    names = []
    for dist in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino"):
        try:
            names.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    return names


def ort_cuda_build() -> dict:
    """What this onnxruntime build needs for CUDA: ``{"package", "cuda", "cudnn", "libraries"}``.

    ``cuda`` is the CUDA version the wheel was built with (None for CPU-only builds);
    ``libraries`` are the CUDA runtime libraries its CUDA provider links (read from the
    provider library itself); ``cudnn`` is the cuDNN major version it loads.
    """
    import onnxruntime as ort

    cuda = getattr(ort, "cuda_version", None) or None
    info = {"package": getattr(ort, "package_name", "onnxruntime"), "cuda": cuda, "cudnn": None, "libraries": []}
    if not cuda:
        return info
    info["libraries"] = list(_cuda_provider_libraries(str(Path(ort.__file__).parent / "capi")))
    info["cudnn"] = _cudnn_major(ort, cuda)
    return info


@functools.lru_cache(maxsize=4)
def _cuda_provider_libraries(capi_dir: str) -> tuple[str, ...]:
    """CUDA libraries (``libcudart.so.13``...) that onnxruntime's CUDA provider library links."""
    lib = Path(capi_dir) / "libonnxruntime_providers_cuda.so"
    try:
        needed = elf_needed(lib)
    except (OSError, ValueError):
        return ()
    return tuple(n for n in needed if re.match(r"lib(cudart|cublasLt|cublas|curand|cufft|nvrtc|cudnn)\b", n))


def elf_needed(path) -> list[str]:
    """The ``DT_NEEDED`` entries (linked shared libraries) of a 64-bit little-endian ELF file."""
    import struct

    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
            raise ValueError(f"{path} is not a 64-bit little-endian ELF file")
        phoff, = struct.unpack_from("<Q", head, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
        loads, dynamic = [], None
        for i in range(phnum):
            p_type, _, p_offset, p_vaddr, _, p_filesz, _, _ = struct.unpack_from("<IIQQQQQQ", table, i * phentsize)
            if p_type == 1:
                loads.append((p_vaddr, p_offset, p_filesz))
            elif p_type == 2:
                dynamic = (p_offset, p_filesz)
        if dynamic is None:
            return []
        f.seek(dynamic[0])
        raw = f.read(dynamic[1])
        entries = [struct.unpack_from("<qQ", raw, k) for k in range(0, len(raw) - 15, 16)]
        strtab = next((v for tag, v in entries if tag == 5), None)
        if strtab is None:
            return []
        base = next((off + strtab - va for va, off, size in loads if va <= strtab < va + size), None)
        if base is None:
            return []
        names = []
        for tag, value in entries:
            if tag == 0:
                break
            if tag == 1:
                f.seek(base + value)
                names.append(f.read(256).split(b"\0", 1)[0].decode(errors="replace"))
        return names


def _cudnn_major(ort, cuda: str) -> str | None:
    """The cuDNN major version onnxruntime loads: from its own preload table, else by CUDA major."""
    paths = getattr(ort, "_get_nvidia_dll_paths", None)  # private; present in onnxruntime >= 1.21
    if paths is not None:
        try:
            for parts in paths(False, cuda=False, cudnn=True):
                m = re.match(r"libcudnn\.so\.(\d+)$", parts[-1])
                if m:
                    return m.group(1)
        except Exception:
            pass
    major = cuda.split(".")[0]
    return {"11": "8"}.get(major, "9") if major.isdigit() else None


def nvidia_driver_cuda() -> str | None:
    """The newest CUDA version the installed NVIDIA driver supports (``"12.4"``), or None without one."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int(0)
    try:
        if libcuda.cuDriverGetVersion(ctypes.byref(version)) != 0:
            return None
    except AttributeError:
        return None
    return f"{version.value // 1000}.{(version.value % 1000) // 10}"


def missing_libraries(names) -> list[str]:
    """The shared libraries among ``names`` that the dynamic loader cannot find."""
    missing = []
    for name in names:
        try:
            ctypes.CDLL(name)
        except OSError:
            missing.append(name)
    return missing


def diagnose() -> dict[str, str]:
    """A report of the runtime environment; values starting with PROBLEM need action."""
    import onnxruntime as ort

    packages = installed_ort_packages()
    report = {"onnxruntime packages": ", ".join(packages) or "PROBLEM: none installed"}
    if len(packages) > 1:
        report["onnxruntime packages"] = (
            f"PROBLEM: {', '.join(packages)} are installed side by side; they overwrite each other's files. "
            "Uninstall all of them, then install only one (onnxruntime-gpu on CUDA machines)."
        )
    if (len(packages) == 1 and packages[0].startswith("onnxruntime-gpu==")
            and "CUDAExecutionProvider" not in ort.get_available_providers()):
        report["onnxruntime packages"] = (
            f"PROBLEM: {', '.join(packages)} is installed but has no CUDA provider: another onnxruntime package "
            "overwrote its files. Run: pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu"
        )
    usable, why = cuda_status()
    report["available providers"] = ", ".join(ort.get_available_providers())
    build = ort_cuda_build()
    if build["cuda"]:
        libs = ", ".join(build["libraries"]) or "unknown"
        report["ort built for"] = (f"CUDA {build['cuda']}, cuDNN {build['cudnn']}.x "
                                   f"(needs {libs}{', libcudnn.so.' + build['cudnn'] if build['cudnn'] else ''})")
        driver = nvidia_driver_cuda()
        if driver is None:
            report["nvidia driver"] = "none (libcuda.so.1 does not load): CUDA libraries not checked"
        else:
            need = build["cuda"].split(".")[0]
            report["nvidia driver"] = f"supports CUDA up to {driver}"
            if driver.split(".")[0].isdigit() and need.isdigit() and int(driver.split(".")[0]) < int(need):
                report["nvidia driver"] = (f"PROBLEM: the driver supports CUDA up to {driver}, but this onnxruntime "
                                           f"needs CUDA {need}: update the NVIDIA driver, or install an "
                                           f"onnxruntime-gpu built for CUDA {driver.split('.')[0]}")
            wanted = list(build["libraries"]) + ([f"libcudnn.so.{build['cudnn']}"] if build["cudnn"] else [])
            absent = missing_libraries(wanted)
            report["cuda libraries"] = "all found" if not absent else (
                f"PROBLEM: cannot load {', '.join(absent)}; install them, e.g. "
                f"pip install 'onnxruntime-gpu[cuda,cudnn]', or add their folder to LD_LIBRARY_PATH"
            )
    else:
        report["ort built for"] = "CPU only (no CUDA provider in this build)"
    report["cuda"] = ("usable: " if usable else "not used: ") + why
    report["auto providers"] = ", ".join(resolve_providers(None))
    report["threads"] = str(default_threads())
    report["cpu int8 (VNNI)"] = ("yes" if has_vnni() else
                                 "no: int8 is less accurate and gains less speed than on VNNI CPUs")
    from ..torchmodels.export import timm_problem

    problem = timm_problem()  # optional: a line that says why and what to install, never a PROBLEM
    report["timm backbones"] = "usable" if problem is None else f"unavailable: {problem}"
    return report
