"""The images the cluster runs: every image of the compiled package has a build target.

The naming convention is the build commands of docs/kubeflow.md ("The cluster path"):
`docker build --target <stage> -t <image> .` for each image, with the shell variables
set in the same code block. The Dockerfile is checked statically (there is no Docker
engine in CI): its `FROM ... AS <stage>` lines, and what each target's stages copy and
install. The package is compiled once, by tests/unit/test_kubeflow.py's fixtures.
"""
import importlib.metadata
import os
import re
import shlex
from typing import Dict, List, Set

import pytest
from packaging.requirements import Requirement

from feedrank.runners.kubeflow_config import load_kubeflow_config
from tests.unit.test_kubeflow import KF, ROOT, docs, package  # noqa: F401  (module-scoped fixtures)

DOCKERFILE = os.path.join(ROOT, "Dockerfile")
LOCK, GPU_LOCK = "requirements.txt", "requirements-gpu.txt"
BUILD_DOCS = [os.path.join(ROOT, "README.md"), os.path.join(ROOT, "docs", "kubeflow.md")]


# --- static readers ------------------------------------------------------------------------

def dockerfile_stages(path: str = DOCKERFILE) -> Dict[str, Dict]:
    """Stage name -> {"base": FROM image or stage, "lines": its instructions (continuations joined)}."""
    with open(path) as f:
        text = re.sub(r"\\\n", " ", f.read())
    stages: Dict[str, Dict] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?\s*$", line, re.I)
        if m:
            assert m.group(2), f"every stage is named (FROM ... AS <name>): {line!r}"
            current = stages.setdefault(m.group(2), {"base": m.group(1), "lines": []})
            continue
        assert current is not None, f"instruction before the first FROM: {line!r}"
        current["lines"].append(line)
    return stages


def target_lines(stages: Dict[str, Dict], target: str) -> List[str]:
    """Every instruction a target's image is built from: its FROM chain and the stages it copies from."""
    lines: List[str] = []
    seen: Set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name not in stages:
            return
        seen.add(name)
        visit(stages[name]["base"])
        for line in stages[name]["lines"]:
            src = re.match(r"COPY\s+--from=(\S+)", line, re.I)
            if src:
                visit(src.group(1))
            lines.append(line)

    visit(target)
    return lines


def installs(lines: List[str], requirements: str) -> bool:
    """True when the lines copy ``requirements`` in and `pip install ... -r` it."""
    copied = any(re.match(rf"COPY\s+(\S+\s+)*{re.escape(requirements)}\s", ln) for ln in lines)
    pip = any(ln.startswith("RUN") and re.search(rf"pip install [^&]*-r {re.escape(requirements)}\b", ln)
              for ln in lines)
    return copied and pip


def documented_builds(paths: List[str] = BUILD_DOCS) -> Dict[str, str]:
    """Image -> Dockerfile target, from every `docker build` line of the docs' shell blocks."""
    builds: Dict[str, str] = {}
    for path in paths:
        with open(path) as f:
            blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", f.read(), re.S)
        for block in blocks:
            env: Dict[str, str] = {}
            for raw in block.splitlines():
                line = raw.split("#", 1)[0].strip()
                var = re.match(r"([A-Z_]+)=(\S+)$", line)
                if var:
                    env[var.group(1)] = var.group(2)
                    continue
                if not line.startswith("docker build"):
                    continue
                words = shlex.split(re.sub(r"\$\{?([A-Z_]+)\}?", lambda m: env.get(m.group(1), m.group(0)), line))
                if words[-1] != "." or {"-f", "--file"} & set(words):
                    continue  # another image (manifests/images/mlflow, serving/Dockerfile)
                assert "--target" in words and "-t" in words, f"{path}: {raw.strip()!r} names no target/tag"
                image, target = words[words.index("-t") + 1], words[words.index("--target") + 1]
                assert "$" not in image, f"{path}: {raw.strip()!r} uses a variable the block does not set"
                assert builds.get(image, target) == target, f"{image} is built from two targets"
                builds[image] = target
    return builds


def package_images(obj) -> Set[str]:
    """Every value of an ``image`` key anywhere in the compiled package."""
    if isinstance(obj, dict):
        found = {v for k, v in obj.items() if k == "image" and isinstance(v, str)}
        return found.union(*(package_images(v) for v in obj.values()))
    if isinstance(obj, list):
        return set().union(*(package_images(v) for v in obj))
    return set()


# --- tests ---------------------------------------------------------------------------------

def test_every_package_image_has_a_build_target(docs):  # noqa: F811
    stages, builds = dockerfile_stages(), documented_builds()
    images = package_images(docs)
    kf = load_kubeflow_config(KF)
    assert images == {kf.image, *kf.images.values()}, "the package uses exactly the configured images"
    for image in images:
        assert image in builds, f"{image} (in the package) is built by no `docker build` line of {BUILD_DOCS}"
        assert builds[image] in stages, f"{image}: Dockerfile has no stage {builds[image]!r}"
    for image, target in builds.items():
        assert target in stages, f"documented build of {image}: Dockerfile has no stage {target!r}"
    # A plain `docker build .` (no --target) builds the last stage: the CPU image.
    assert list(stages)[-1] == builds[kf.image]


def test_targets_install_the_same_lock():
    stages, builds = dockerfile_stages(), documented_builds()
    for target in sorted(set(builds.values())):
        lines = target_lines(stages, target)
        assert installs(lines, LOCK), f"target {target!r} does not install {LOCK}"
        assert any("--no-deps" in ln and f"-r {LOCK}" in ln for ln in lines), f"{target}: lock without --no-deps"
        assert any(ln.startswith("COPY --from=code") or ln.startswith("COPY feedrank/") for ln in lines), target


def test_trainer_image_has_the_cuda_libraries(docs):  # noqa: F811
    """The GPU task's image installs requirements-gpu.txt; the others do not carry CUDA."""
    stages, builds = dockerfile_stages(), documented_builds()
    kf = load_kubeflow_config(KF)
    gpu_images = {c["image"] for c in (e.get("container", {}) for e in docs[0]["deploymentSpec"]["executors"].values())
                  if "accelerator" in c.get("resources", {})}
    assert gpu_images == {kf.images["Trainer"]}
    for image in package_images(docs):
        lines = target_lines(stages, builds[image])
        assert installs(lines, GPU_LOCK) == (image in gpu_images), image


def _pins(path: str) -> Dict[str, str]:
    with open(path) as f:
        reqs = [Requirement(ln) for ln in (raw.split("#", 1)[0].strip() for raw in f) if ln]
    for r in reqs:
        assert len(r.specifier) == 1 and next(iter(r.specifier)).operator == "==", f"{path}: {r} is not pinned"
    return {r.name.lower(): next(iter(r.specifier)).version for r in reqs}


def test_cuda_pins_are_tensorflows_own():
    """requirements-gpu.txt is exactly the `and-cuda` extra of the locked TensorFlow."""
    lock = _pins(os.path.join(ROOT, LOCK))
    tf_version = importlib.metadata.version("tensorflow")
    if lock["tensorflow"] != tf_version:
        pytest.fail(f"installed tensorflow {tf_version} is not the lock's {lock['tensorflow']}: reinstall the lock")
    extra = {}
    for spec in importlib.metadata.requires("tensorflow") or []:
        req = Requirement(spec)
        if req.marker is not None and req.marker.evaluate({"extra": "and-cuda"}) \
                and not req.marker.evaluate({"extra": ""}):
            extra[req.name.lower()] = str(req.specifier).lstrip("=")
    assert extra, "tensorflow declares no and-cuda extra"
    gpu = _pins(os.path.join(ROOT, GPU_LOCK))
    assert gpu == extra
    assert not set(gpu) & set(lock), "the CUDA pins go on top of the lock, not into it"


def test_dockerfile_reader_sees_stage_chains(tmp_path):
    """The static reader follows FROM and COPY --from, and refuses an unnamed stage."""
    path = tmp_path / "Dockerfile"
    path.write_text("FROM python:3.11 AS a\nCOPY requirements.txt .\nRUN pip install \\\n  -r requirements.txt\n"
                    "FROM busybox AS b\nCOPY --from=a /x /x\nFROM b AS c\nRUN true\n")
    stages = dockerfile_stages(str(path))
    assert list(stages) == ["a", "b", "c"] and stages["c"]["base"] == "b"
    assert installs(target_lines(stages, "c"), LOCK)
    assert not installs(target_lines(stages, "a")[:1], LOCK)
    path.write_text("FROM python:3.11\nRUN true\n")
    with pytest.raises(AssertionError, match="every stage is named"):
        dockerfile_stages(str(path))
