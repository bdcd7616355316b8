# The pipeline images: what the Kubeflow runner's components run in.
#
#   docker build --target cpu -t $REGISTRY/pipeline:$VERSION .       every component
#   docker build --target gpu -t $REGISTRY/pipeline-gpu:$VERSION .   the Trainer on the GPU pool
#
# (docs/kubeflow.md, "The cluster path"; the names are those of configs/kubeflow.yaml, and
# tests/unit/test_images.py checks that every image of the compiled package has a target here.)
# Both targets install the same lock (requirements.txt); the GPU target adds the CUDA
# libraries TensorFlow 2.16.2 was built against (requirements-gpu.txt). Python 3.11 to
# match the lock. A plain `docker build .` builds the last stage, `cpu`.

# --- deps: the locked Python environment, shared by both targets -------------------------
FROM python:3.11.7-slim-bookworm AS deps

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_USE_LEGACY_KERAS=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /pipeline

# The lock is complete (every transitive pin); TFX 1.16's wheel says Requires-Python
# <3.11 but runs on 3.11 (docs/install.md). Dependencies come before the code, so a
# code change reuses this layer.
COPY requirements.txt .
RUN pip install --upgrade pip==24.3.1 \
 && pip install --no-deps --ignore-requires-python -r requirements.txt \
 && python -c "import tfx, tensorflow_transform, tensorflow_model_analysis, tf_keras"

ENTRYPOINT ["python", "pipeline.py"]
CMD ["--help"]

# --- code: the project and its schema, copied into both targets --------------------------
# Each target installs the project from /pipeline, editable (`pip install -e`, as `make install`
# does): importable from any directory, while the code stays under /pipeline, where paths derived
# from the package's location expect it (the code fingerprint hashes feedrank/ and components/
# side by side). The lock provides setuptools and wheel for the build without isolation.
FROM deps AS code
COPY pyproject.toml README.md ./
COPY feedrank/ feedrank/
COPY components/ components/
COPY configs/ configs/
COPY pipeline.py .
# The schemas derived from feedrank/features.py (built-in, and each config's declared
# columns), at the content-hashed paths that `pipeline.py compile` writes into the Kubeflow package.
RUN python -c "from feedrank.examples.tfdv_schema import write_config_schemas; print(write_config_schemas('/pipeline/schema', 'configs'))"

# --- gpu: the lock + CUDA 12.3 / cuDNN 8.9 from PyPI (tensorflow==2.16.2's and-cuda pins) ---
FROM deps AS gpu
COPY requirements-gpu.txt .
RUN pip install --no-deps -r requirements-gpu.txt
# TensorFlow 2.16 does not search the pip-installed NVIDIA wheels by itself: register
# every nvidia/*/lib directory with the dynamic loader, and put ptxas (XLA) on PATH.
ENV PATH=/usr/local/lib/python3.11/site-packages/nvidia/cuda_nvcc/bin:$PATH
RUN python -c "import glob, os, nvidia; \
print('\n'.join(sorted(d for p in nvidia.__path__ for d in glob.glob(os.path.join(p, '*', 'lib')))))" \
      > /etc/ld.so.conf.d/nvidia-pip.conf \
 && ldconfig \
 && python -c "import ctypes; [ctypes.CDLL(n) for n in ('libcudart.so.12', 'libcublas.so.12', \
'libcublasLt.so.12', 'libcudnn.so.8', 'libcufft.so.11', 'libcurand.so.10', 'libcusolver.so.11', \
'libcusparse.so.12', 'libnccl.so.2', 'libnvJitLink.so.12', 'libcupti.so.12')]" \
 && ptxas --version
COPY --from=code /pipeline /pipeline
RUN pip install --no-deps --no-build-isolation -e .

# --- cpu: the lock alone (every component but the Trainer); the default target ------------
FROM deps AS cpu
COPY --from=code /pipeline /pipeline
RUN pip install --no-deps --no-build-isolation -e .
