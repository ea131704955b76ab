# vislab on a CUDA machine: the project installed exactly as the README does it (`make install`: a venv
# with `pip install -e .[dev]`), run as a non-root user, `vislab` as the entrypoint.
#   docker build -t vislab .
#   docker run --gpus all --shm-size 16g -v /data:/data vislab fit configs/classify/resnet50_imagenet.yaml
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv make git ca-certificates \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 --shell /bin/bash vislab
WORKDIR /opt/vislab
COPY --chown=1000:1000 . .
USER 1000:1000
RUN make install

ENV PATH=/opt/vislab/.venv/bin:$PATH \
    WANDB_DIR=/opt/vislab/runs
ENTRYPOINT ["vislab"]
CMD ["--help"]
