# The pipeline image: what the Kubeflow runner's components run in.
# Python 3.11 to match the committed lock (requirements.txt, see README "Install").
# It cannot be built on the development machine (no Docker engine there).
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_USE_LEGACY_KERAS=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /pipeline

# Dependencies first, so code changes reuse this layer.
COPY requirements.txt .
RUN pip install --upgrade pip==24.3.1 \
 && pip install --no-deps --ignore-requires-python -r requirements.txt \
 && python -c "import tfx, tensorflow_transform, tensorflow_model_analysis, tf_keras"

# The project code: the feedrank package, the custom components and the CLI.
COPY feedrank/ feedrank/
COPY components/ components/
COPY configs/ configs/
COPY pipeline.py .

ENV PYTHONPATH=/pipeline
# The schema derived from feedrank/features.py, at the content-hashed path
# that `pipeline.py compile` writes into the Kubeflow package.
RUN python -c "from feedrank.schema import write_schema; print(write_schema('/pipeline/schema'))"
ENTRYPOINT ["python", "pipeline.py"]
CMD ["--help"]
