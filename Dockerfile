# One image for the bot (`python -m bot`), the GPU worker (`python -m bot.worker`) and the gallery (`python -m web`).
# The official PyTorch CUDA runtime image already carries torch 2.13.0 (the version pyproject pins),
# so pip keeps it and adds only the pure-Python layers on top.
ARG PYTORCH_IMAGE=pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime
FROM ${PYTORCH_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HOME=/cache/huggingface \
    STYLECODES_DATA_DIR=/data
WORKDIR /app

# Layer 1, the dependencies: rebuilt only when pyproject.toml changes, not on every source edit.
# Empty package folders let pip resolve the project's requirements before its source is copied.
COPY pyproject.toml README.md ./
RUN mkdir stylecodes registry bot web \
    && touch stylecodes/__init__.py registry/__init__.py bot/__init__.py web/__init__.py \
    && pip install . \
    && pip uninstall -y stylecodes \
    && rm -rf stylecodes registry bot web build *.egg-info

# Layer 2, the source, installed in place: the registry finds its migrations (alembic/) beside it,
# so `python -m bot` can run `alembic upgrade head` at start as well as the compose `migrate` service.
COPY alembic.ini ./
COPY alembic ./alembic
COPY stylecodes ./stylecodes
COPY registry ./registry
COPY bot ./bot
COPY web ./web
RUN pip install --no-deps -e . \
    && useradd --create-home --uid 10001 stylecodes \
    && mkdir -p /cache/huggingface /data \
    && chown stylecodes /cache/huggingface /data
USER stylecodes

CMD ["python", "-m", "bot"]
