"""Leave out of a container image the model files its server never opens.

    python -m service.pack --device cpu MODELS_DIR

MODELS_DIR is a Bento's ``models/`` (BentoML's layout: ``NAME/VERSION/`` with each bundle's
``manifest.json``). Every bundle keeps its manifest, tokenizer and other files, and of its ONNX
variants only those a server on ``--device`` opens (``Bundle.served_variants``): on cpu the
bundle's CPU variant and ``explain``, on cuda its GPU variant and ``explain``. The manifest stays
as the export wrote it, so its file hashes still check what is left; the engine names a variant
whose file an image left out when asked for it.

The image's Dockerfile (k8s/Dockerfile.template) runs this in its build stage, inside the Bento
(engine.bundle and the pydantic it reads manifests with: no onnxruntime, no model loaded). Prints
what it kept and what it left out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.bundle import MANIFEST, Bundle, BundleError


def pack(models: Path, device: str) -> list[tuple[Path, list[str], list[str], int]]:
    """Remove, from every bundle under ``models``, the variant files a server on ``device`` never
    opens; returns (bundle, variants kept, files removed, bytes freed) per bundle. BundleError
    when ``models`` holds no bundle, or a bundle cannot be served on ``device``."""
    manifests = sorted(models.glob(f"*/*/{MANIFEST}"))
    if not manifests:
        raise BundleError(f"no model bundle under {models} (looked for */*/{MANIFEST})")
    done = []
    for manifest in manifests:
        bundle = Bundle.load(manifest.parent)
        removed, freed = [], 0
        for name in bundle.unserved_files(device):
            file = bundle.path / name
            if file.is_file():
                freed += file.stat().st_size
                file.unlink()
                removed.append(name)
        done.append((bundle.path, bundle.served_variants(device), removed, freed))
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.pack", description=__doc__.split("\n\n")[0])
    parser.add_argument("models", type=Path, help="a Bento's models/ directory")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu",
                        help="the device the image serves on (auto: cpu)")
    args = parser.parse_args(argv)
    device = "cpu" if args.device == "auto" else args.device
    try:
        done = pack(args.models, device)
    except BundleError as exc:
        print(f"service.pack: {exc}", file=sys.stderr)
        return 1
    for path, kept, removed, freed in done:
        print(f"{path.relative_to(args.models)}: serves {', '.join(kept)} on {device}; left out "
              f"{', '.join(removed) or 'nothing'} ({freed / 1e6:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
