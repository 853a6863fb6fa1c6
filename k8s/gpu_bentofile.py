"""The GPU Bento's build file, made from the project's bentofile.yaml at build time.

    python k8s/gpu_bentofile.py bentofile.yaml build/bentofile.gpu.yaml

It is the CPU Bento's spec (same service, code, models and pins) with three changes, so the two
can never drift apart:

- name ``textcls-gpu`` (``<name>-gpu``), so both Bentos sit side by side in the store;
- ``onnxruntime-gpu`` instead of ``onnxruntime``, at the same version: where bentofile.yaml
  installs a lock file (``python.requirements_txt: requirements/serving.lock``), its GPU twin
  ``requirements/serving-gpu.lock`` (``make lock`` writes both; hashes cannot be made offline);
  where it lists ``python.packages``, the ``onnxruntime`` entry is replaced. The PyPI wheel of
  onnxruntime-gpu 1.31 links CUDA 13 and cuDNN 9 (``libcudart.so.13``, ``libcublas.so.13``);
- a CUDA 13 + cuDNN 9 runtime base image. BentoML's own ``docker.cuda_version`` stops at
  CUDA 12.8, so the base image is named instead. That image has no Python or pip; the image's
  build stage (k8s/Dockerfile.template) installs Debian's python3-pip there, bootstraps ``uv``
  with it (PEP 668 lifted in that stage only), and uv installs Python 3.11 into
  /app/python; the image itself gets /app only, not pip;
- ``TEXTCLS_DEVICE=cuda``: the image serves on the GPU (the GPU overlay sets it too), and its
  build packs the GPU variant (fp16) and ``explain`` of each model, not the CPU's int8.

k8s/build-images.sh runs it; tests/test_k8s.py checks its output. PyYAML only.
"""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path, PurePosixPath

import yaml

CUDA_BASE_IMAGE = "nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04"
_ONNXRUNTIME = re.compile(r"^onnxruntime(?=\s*(?:[=<>!~;\[]|$))")
_LOCKED_ONNXRUNTIME = re.compile(r"^onnxruntime(-gpu)?==(\S+?)\s*(?:\\|;|$)", re.MULTILINE)


class GpuBentofileError(ValueError):
    """bentofile.yaml is not in a shape the GPU variant can be made from."""


def gpu_bentofile(cpu: dict, base_image: str = CUDA_BASE_IMAGE) -> dict:
    """The GPU variant of a parsed bentofile.yaml (which is left unchanged)."""
    spec = copy.deepcopy(cpu)
    spec["name"] = f"{cpu.get('name', 'textcls')}-gpu"
    python = spec.get("python") or {}
    if python.get("requirements_txt"):
        python["requirements_txt"] = gpu_lock_path(python["requirements_txt"])
        python.pop("packages", None)  # BentoML ignores packages beside requirements_txt
    else:
        packages = python.get("packages") or []
        runtimes = [i for i, p in enumerate(packages) if _ONNXRUNTIME.match(str(p).strip())]
        if len(runtimes) != 1:
            raise GpuBentofileError(
                "bentofile.yaml must list `onnxruntime` exactly once under python.packages (found "
                f"{len(runtimes)}), or install a lock file (python.requirements_txt); the GPU "
                "image replaces it with onnxruntime-gpu at the same version"
            )
        i = runtimes[0]
        packages[i] = _ONNXRUNTIME.sub("onnxruntime-gpu", str(packages[i]).strip())
    docker = spec.setdefault("docker", {}) or {}
    spec["docker"] = docker
    for key in ("cuda_version", "distro"):
        docker.pop(key, None)  # the base image decides both
    docker["base_image"] = base_image
    docker["system_packages"] = [*(docker.get("system_packages") or []), "python3-pip"]
    added = {"TEXTCLS_DEVICE": "cuda"}
    envs = [e for e in spec.get("envs") or [] if e.get("name") not in added]
    spec["envs"] = [*envs, *({"name": k, "value": v} for k, v in added.items())]
    return spec


def gpu_lock_path(cpu_lock: str) -> str:
    """requirements/serving.lock -> requirements/serving-gpu.lock"""
    path = PurePosixPath(cpu_lock)
    return str(path.with_name(f"{path.stem}-gpu{path.suffix}"))


def check_gpu_lock(cpu_lock: Path, gpu_lock: Path) -> None:
    """The GPU lock pins onnxruntime-gpu, and no onnxruntime, at the CPU lock's onnxruntime version."""
    if not gpu_lock.is_file():
        raise GpuBentofileError(f"no {gpu_lock}: `make lock` writes it beside {cpu_lock.name}")
    cpu = dict(_LOCKED_ONNXRUNTIME.findall(cpu_lock.read_text()))
    gpu = dict(_LOCKED_ONNXRUNTIME.findall(gpu_lock.read_text()))
    if set(cpu) != {""} or set(gpu) != {"-gpu"} or cpu[""] != gpu["-gpu"]:
        raise GpuBentofileError(
            f"{cpu_lock} must pin onnxruntime and {gpu_lock} onnxruntime-gpu (and not onnxruntime) "
            f"at the same version; found {cpu} and {gpu}: run `make lock`")


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    source, target = Path(argv[0]), Path(argv[1])
    base_image = argv[2] if len(argv) == 3 else CUDA_BASE_IMAGE
    try:
        cpu = yaml.safe_load(source.read_text())
        spec = gpu_bentofile(cpu, base_image)
        if lock := (cpu.get("python") or {}).get("requirements_txt"):
            context = source.parent  # the build context: requirements_txt is relative to it
            check_gpu_lock(context / lock, context / spec["python"]["requirements_txt"])
    except GpuBentofileError as exc:
        print(f"{source}: {exc}", file=sys.stderr)
        return 1
    target.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Generated from {source} by k8s/gpu_bentofile.py; edit {source} instead.\n"
    target.write_text(header + yaml.safe_dump(spec, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
