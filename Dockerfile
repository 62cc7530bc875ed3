# Serving image: the API and the shipped models, no training extras, non-root.
#   docker build -t ecg-api .                                    # online, official base image
#   docker build --build-arg BASE_IMAGE=ecg-base:bookworm \
#                --build-arg WHEELHOUSE=build/wheelhouse -t ecg-api .   # air-gapped (scripts/docker-smoke.sh)
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# Folder (inside the build context) of wheels for an offline install; empty = install from the index.
ARG WHEELHOUSE=
# CPU-only torch for the online route (the default index would pull CUDA packages).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

# NUMBA_CACHE_DIR: the compiled ODE solver caches its machine code where the non-root user can write.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH NUMBA_CACHE_DIR=/tmp/numba-cache \
    ECG_HOST=0.0.0.0 ECG_PORT=8000 ECG_MODELS_DIR=/app/models

WORKDIR /app
COPY pyproject.toml README.md ./
COPY service/ service/
# COPY needs a source that exists: without a wheelhouse it copies service/ and ignores it.
COPY ${WHEELHOUSE:-service}/ /tmp/wheelhouse/
RUN python3 -m venv /opt/venv \
 && if [ -n "$WHEELHOUSE" ]; then \
      pip install --no-cache-dir --no-index --find-links /tmp/wheelhouse . ; \
    else \
      pip install --no-cache-dir --extra-index-url "$TORCH_INDEX" "torch==2.13.0+cpu" . ; \
    fi \
 && rm -rf /tmp/wheelhouse \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin ecg

COPY models/ /app/models/
RUN rm -rf /app/models/logs && chmod -R a+rX /app/models

USER ecg
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"ECG_PORT\"]}/readyz', timeout=4)"]
CMD ["ecg-serve"]
