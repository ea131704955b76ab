# vislab in a container: a non-editable install (no dev tools) in a venv owned by a non-root user.
# torch comes from PyTorch's own wheel index, chosen at build time; its CUDA wheels carry their own CUDA
# libraries, so the base image is a plain Python one for both (the host only needs the NVIDIA driver).
#   docker build -t vislab .                                                   # CPU torch (default)
#   docker build -t vislab:cu128 --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
#   docker run --rm --shm-size 1g vislab demo                                  # the demo, in /work
#   docker run --rm --shm-size 1g -v "$PWD/runs:/work/runs" vislab demo        # ... keeping its runs
#   docker run --gpus all --shm-size 16g -v /data:/data vislab:cu128 fit classify/resnet50_imagenet \
#       data.root=/data/imagenet-shards
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/vislab/venv \
    PATH=/opt/vislab/venv/bin:$PATH \
    WANDB_MODE=offline \
    WANDB_DIR=/work/runs

# the user exists before any folder it writes to; both folders are created and owned by it
RUN useradd --create-home --uid 1000 --shell /bin/bash vislab \
    && install -d -o vislab -g vislab /opt/vislab /work
USER 1000:1000
# torch first, from the chosen index, so that the project's `torch>=...` is already satisfied
RUN python -m venv /opt/vislab/venv \
    && pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"

# the source only for building the wheel: a regular install into site-packages, then the source is gone
COPY --chown=1000:1000 . /tmp/vislab-src
RUN pip install /tmp/vislab-src \
    && rm -rf /tmp/vislab-src \
    && vislab --version

WORKDIR /work
ENTRYPOINT ["vislab"]
CMD ["--help"]
