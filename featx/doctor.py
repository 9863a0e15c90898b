"""What ONNX Runtime can use here: packages, providers, CUDA, CPU features."""

from __future__ import annotations

from importlib import metadata


def installed_ort_packages() -> list[str]:
    names = []
    for dist in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino"):
        try:
            names.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    return names


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def has_vnni() -> bool:
    """int8 GEMMs are fast only with AVX-512 VNNI or AVX-VNNI."""
    return bool(cpu_flags() & {"avx512_vnni", "avx_vnni"})


def diagnose() -> dict[str, str]:
    """A report of the runtime environment; values starting with PROBLEM need action."""
    import onnxruntime as ort

    from .runtime import cuda_status, default_threads, resolve_providers

    packages = installed_ort_packages()
    report = {"onnxruntime packages": ", ".join(packages) or "PROBLEM: none installed"}
    if len(packages) > 1:
        report["onnxruntime packages"] = (
            f"PROBLEM: {', '.join(packages)} are installed side by side; they overwrite each other's files. "
            "Uninstall all of them, then install only one (onnxruntime-gpu on CUDA machines)."
        )
    usable, why = cuda_status()
    report["available providers"] = ", ".join(ort.get_available_providers())
    report["cuda"] = ("usable: " if usable else "not used: ") + why
    report["auto providers"] = ", ".join(resolve_providers(None))
    report["threads"] = str(default_threads())
    report["cpu int8 (VNNI)"] = "yes" if has_vnni() else "no: int8 models will be slow and less accurate"
    return report
