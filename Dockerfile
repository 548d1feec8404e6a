# One image for both SageMaker verbs:
#   docker run IMAGE train   (SageMaker training jobs; also the default, see CMD)
#   docker run IMAGE serve   (SageMaker endpoints: /ping and /invocations on port 8080)
#
#   docker build -t genkiln .                              CPU build from python:3.11-slim
#   docker build -t genkiln --build-arg TORCH_VARIANT=cuda .   CUDA build (GPU instances)
#   bash .ci/image.sh                                      offline build on a debootstrap base
#
# Works with the legacy builder (Docker 20.10, DOCKER_BUILDKIT=0): no RUN --mount, no heredocs.

# Any Debian-like image with Python 3.11, its venv module and CA certificates:
# python:3.11-slim for everyone, an imported debootstrap root on machines that cannot pull.
ARG BASE_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS builder

# cpu: the CPU build of torch (a wheel in .ci/image/wheels/ when there is one, else the PyTorch
# CPU index); cuda: PyPI's torch, which brings its CUDA libraries as wheels (the host or
# SageMaker instance supplies the NVIDIA driver; images must not bundle it).
ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.13.0
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_DEFAULT_TIMEOUT=180 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt

# Extra CA certificates from the build context (.ci/image/certs/*.crt, normally none): behind a
# TLS-intercepting proxy pip can only verify its index with them. They stay in this stage.
COPY .ci/image/certs/ /usr/local/share/ca-certificates/genkiln/
RUN update-ca-certificates >/dev/null

RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

COPY .ci/image/wheels/ /tmp/wheels/
RUN set -eu; \
    case "$TORCH_VARIANT" in \
      cpu) \
        if ls /tmp/wheels/torch-*.whl >/dev/null 2>&1; then \
          pip install /tmp/wheels/torch-*.whl; \
        else \
          pip install --index-url "$TORCH_CPU_INDEX" --extra-index-url https://pypi.org/simple \
            "torch==$TORCH_VERSION"; \
        fi ;; \
      cuda) pip install "torch==$TORCH_VERSION" ;; \
      *) echo "TORCH_VARIANT must be cpu or cuda, not '$TORCH_VARIANT'" >&2; exit 2 ;; \
    esac; \
    rm -rf /tmp/wheels

# The project's dependencies first (read from pyproject.toml), so that a change to the code
# does not reinstall them.
WORKDIR /src
COPY pyproject.toml ./
RUN python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
      > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

# What serving and training never load goes: C/C++ headers and static libraries (for
# compiling extensions), torch's C++ test binaries and protobuf compiler (about 130 MB;
# torch/bin keeps torch_shm_manager, which DataLoader workers use), the test suites of
# numpy, scipy and scikit-learn (about 50 MB), music21's corpus but for the Bach chorales
# genkiln trains on (about 60 MB; bring other music as MIDI files), diffusers' pipelines
# (40 MB: the diffusion family uses its UNet and schedulers only), pip, and the control
# plane's `genkiln` command (its package is not in the build context: the image runs
# `python -m training` and `python -m inference`).
COPY . .
RUN pip install --no-deps . \
    && rm /opt/venv/bin/genkiln \
    && site=/opt/venv/lib/python3.11/site-packages \
    && rm -rf "$site/torch/include" "$site/torch/test" \
    && find "$site/torch/bin" -type f \( -name '*Test' -o -name 'test_*' -o -name 'protoc*' \) -delete \
    && find /opt/venv -name '*.a' -delete \
    && find "$site/numpy" "$site/scipy" "$site/sklearn" -depth -type d -name tests \
         -exec rm -rf {} + \
    && find "$site/music21/corpus" -mindepth 1 -maxdepth 1 -type d \
         ! -name bach ! -name _metadataCache ! -name __pycache__ -exec rm -rf {} + \
    && rm -rf "$site/diffusers/pipelines" "$site/diffusers/modular_pipelines" \
    && pip uninstall --yes --quiet pip \
    && python3 -c 'import torch, inference.server, training.command; print("torch", torch.__version__)' \
    && python3 -c 'from training.models.diffusion import DiffusionConfig, PromptDiffusion, make_sampler; from training.models.convnets import ImageSpec; PromptDiffusion(DiffusionConfig(), ImageSpec(48, 3, ())); make_sampler(DiffusionConfig(), "dpm", 5); make_sampler(DiffusionConfig(), "ddim", 5)' \
    && python3 -c 'from music21 import corpus; assert len(corpus.getComposer("bach")) > 400'

# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE}

# accept-bind-to-port: SageMaker may pass SAGEMAKER_BIND_TO_PORT, which the server honours.
LABEL org.opencontainers.image.title="genkiln" \
      org.opencontainers.image.description="genkiln: train and serve generative models on SageMaker" \
      com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true

COPY --from=builder /opt/venv /opt/venv
COPY .ci/image/entrypoint.sh /usr/local/bin/genkiln-entrypoint
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# One model per process; its intra-op threads are set from the cores the container may
# use when the model loads (inference/threads.py, GENKILN_NUM_THREADS overrides). OpenMP:
# a fixed team (no dynamic resizing), and idle threads that stop spinning after ~10k
# iterations instead of GNU OpenMP's 300k, so between two decode steps they leave the
# cores to the event loop and the other requests' work.
ENV OMP_DYNAMIC=FALSE \
    GOMP_SPINCOUNT=10000

WORKDIR /opt/ml
EXPOSE 8080

# Exec form and no init: the entry point `exec`s the runtime (or another program it is
# given), so that the runtime is PID 1 and receives SageMaker's SIGTERM itself (spot interruption,
# stopped job, endpoint scale-in). See .ci/image/entrypoint.sh.
ENTRYPOINT ["/usr/local/bin/genkiln-entrypoint"]
# The SDK's local-mode trainer passes no command, and SageMaker passes `train` or `serve`.
CMD ["train"]
