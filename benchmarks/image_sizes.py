"""Image sizes per role (``make bench-images``): what each image adds on top of the shared base image.

Measured without a Docker engine, from the locks the Dockerfiles install:

1. ``pip download --require-hashes --no-deps`` of the lock for the image's platform (CPython 3.11, manylinux_2_28
   x86-64; the rare package without a wheel, e.g. kfp-server-api, as its sdist): the exact files the image build
   installs. Their sum is the **compressed wheel total**
   (close to what a pull of that layer transfers); the CUDA part (torch's CUDA build, ``nvidia-*``, ``cuda-*``,
   ``triton``) is also reported on its own.
2. ``pip install --no-deps --no-index`` of those wheels into an empty folder, with bytecode compiled as the
   Dockerfile's ``pip install`` does: the **installed size**, the sum of the file sizes (an uncompressed layer is
   the tar of these files).
3. The project files each Dockerfile copies (``COPY cityscale ...``), summed the same way.

Not measured here: the base image (``python:3.11.13-slim-bookworm``) and ``libgomp1``, identical in both images.
The CPU torch wheel (``torch==2.13.0+cpu``) comes from ``/opt/wheels`` when it is there, else the PyTorch CPU index
(``TORCH_FIND_LINKS``, as in the Makefile); the lock's sha256 decides which file is accepted.

Downloads several GB for the pipeline image (the CUDA wheels). ``--only serving`` measures one image; wheels are
kept in ``build/image-sizes/`` so a second run downloads nothing. Writes build/bench/image_sizes.json.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import write_result

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "build" / "image-sizes"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu/torch/"
# image -> (lock it installs, what its Dockerfile copies from the repo)
IMAGES = {
    "serving": ("requirements/serving.lock", ["cityscale", "serving"]),
    "pipeline": (
        "requirements/app.lock",
        ["pyproject.toml", "README.md", "cityscale", "components", "pipelines", "serving", "feature_repo", "airbyte"],
    ),
}
# Wheel file names of the CUDA runtime and of PyPI's (CUDA) torch.
CUDA = re.compile(r"^(nvidia[-_]|cuda[-_]|triton-)|^torch-[^+]*-")
# python:3.11-slim-bookworm (glibc 2.36) installs manylinux_2_28 wheels and every older manylinux tag; pip download
# --platform takes each tag literally, so all are named.
MANYLINUX = [f"manylinux_2_{minor}_x86_64" for minor in range(28, 4, -1)]
MANYLINUX += ["manylinux2014_x86_64", "manylinux1_x86_64"]
PLATFORM = [*(a for tag in MANYLINUX for a in ("--platform", tag)), "--python-version", "311", "--implementation", "cp"]
PLATFORM += ["--abi", "cp311", "--abi", "abi3", "--abi", "none"]
MB = 1e6


def norm(text: str) -> str:
    """File names and pins compared the way wheel names are normalised (``kfp-server-api`` ~ ``kfp_server_api``)."""
    return re.sub(r"[-_.+]+", "_", text.lower())


def torch_find_links() -> str:
    wheels = Path("/opt/wheels")
    return str(wheels) if any(wheels.glob("torch-*+cpu-*.whl")) else TORCH_CPU_INDEX


def tree_bytes(*paths: Path) -> int:
    """Sum of the regular files' sizes under ``paths`` (caches and bytecode of the working tree left out)."""
    total = 0
    for root in paths:
        if root.is_file():
            total += root.stat().st_size
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            total += sum(Path(dirpath, f).lstat().st_size for f in filenames if not f.endswith(".pyc"))
    return total


def installed_bytes(target: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(target):
        total += sum(Path(dirpath, f).lstat().st_size for f in filenames)
    return total


def pip(*args: str) -> None:
    """pip without this machine's pip configuration (local indexes, find-links, constraints), as in an image build:
    a find-links folder holding the CPU torch would otherwise be offered for app.lock's ``torch==2.13.0`` too."""
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k == "PIP_CERT"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**env, "PIP_CONFIG_FILE": os.devnull})
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")


def measure(name: str, lock: str, copied: list[str]) -> dict[str, float | int | str]:
    wheels = WORK / f"wheels-{name}"
    wheels.mkdir(parents=True, exist_ok=True)
    print(f"{name}: downloading the wheels of {lock} into {wheels} ...", flush=True)
    cpu_torch = re.search(r"^torch==\S*\+cpu", (REPO / lock).read_text(), re.M)
    torch_cpu = ["--find-links", torch_find_links()] if cpu_torch else []
    pip("download", "--quiet", "--no-deps", "--require-hashes", "--prefer-binary", *PLATFORM, *torch_cpu,
        "-r", str(REPO / lock), "-d", str(wheels))  # fmt: skip
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", (REPO / lock).read_text(), re.M)
    # Only the files of the lock's pins count (a file left from an earlier lock does not): one per pin.
    wanted = {norm(f"{n}-{v}-") for n, v in pins}
    files = [f for f in sorted(wheels.iterdir()) if any(norm(f.name).startswith(w) for w in wanted)]
    assert len(files) == len(pins), f"{name}: {len(files)} files for {len(pins)} pins in {wheels} (clean it)"
    sdists = [f.name for f in files if not f.name.endswith(".whl")]
    compressed = sum(f.stat().st_size for f in files)
    cuda = sum(f.stat().st_size for f in files if CUDA.search(f.name))
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        target = Path(tmp) / "site-packages"
        print(f"{name}: installing {len(files)} files (bytecode compiled, as in the image) ...", flush=True)
        pip("install", "--quiet", "--no-deps", "--no-index", "--require-hashes", "--find-links", str(wheels),
            "--target", str(target), "-r", str(REPO / lock))  # fmt: skip
        installed = installed_bytes(target)
        largest = sorted(
            ((installed_bytes(p), p.name) for p in target.iterdir() if p.is_dir() and not p.name.endswith("-info")),
            reverse=True,
        )[:3]
    code = tree_bytes(*(REPO / c for c in copied))
    return {
        "lock": lock,
        "packages": len(pins),
        "wheels_compressed_MB": round(compressed / MB, 1),
        "cuda_wheels_compressed_MB": round(cuda / MB, 1),
        "installed_MB": round(installed / MB, 1),
        "project_files_MB": round(code / MB, 1),
        "image_minus_base_MB": round((installed + code) / MB, 1),
        "largest_installed": ", ".join(f"{n} {b / MB:.0f} MB" for b, n in largest),
        "sdists": ", ".join(sdists),  # no wheel on PyPI: the build turns them into one (counted as downloaded)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(IMAGES), help="measure one image")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    rows = {name: measure(name, *IMAGES[name]) for name in IMAGES if args.only in (None, name)}
    if len(rows) == 2:
        serving, pipeline = rows["serving"]["image_minus_base_MB"], rows["pipeline"]["image_minus_base_MB"]
        print(f"on top of the base: serving image {serving:,.0f} MB, pipeline image {pipeline:,.0f} MB")
    write_result("image_sizes", rows)
    if shutil.which("docker") is None:
        print("(no docker here: base image python:3.11.13-slim-bookworm + libgomp1 not included, same in both)")


if __name__ == "__main__":
    main()
