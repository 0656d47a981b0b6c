# One image for both the bot and the GPU worker.
# The official PyTorch CUDA runtime image already carries torch 2.13.0 (the version pyproject pins),
# so pip keeps it and adds only the pure-Python layers on top.
ARG PYTORCH_IMAGE=pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime

# --- build stage: wheels for the project and its dependencies (no compilers in the final image) ---
FROM ${PYTORCH_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY stylecodes ./stylecodes
COPY registry ./registry
COPY bot ./bot
# --no-deps: only the project itself; its dependencies install from wheels in the runtime stage,
# where torch is already satisfied by the base image.
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# --- runtime stage ---
FROM ${PYTORCH_IMAGE}
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HOME=/cache/huggingface \
    STYLECODES_DATA_DIR=/data
RUN useradd --create-home --uid 10001 stylecodes \
    && mkdir -p /cache/huggingface /data \
    && chown stylecodes /cache/huggingface /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
WORKDIR /app
# Migrations ship with the image: `alembic upgrade head` runs from here before the bot starts.
COPY alembic.ini ./
COPY alembic ./alembic
USER stylecodes
# The bot by default; the compose file runs `python -m bot.worker` for GPU workers.
CMD ["python", "-m", "bot"]
