# Serving image: the API and the shipped models, no torch, no training extras, non-root.
#   docker build -t ecg-api .                                    # online, official base image
#   docker build --build-arg BASE_IMAGE=ecg-base:bookworm \
#                --build-arg WHEELHOUSE=build/wheelhouse -t ecg-api .   # air-gapped (scripts/docker-smoke.sh)
# Two stages: the wheelhouse and pip's work stay in the first; the image takes only the finished venv.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS venv
LABEL ecg.stage=venv
# Folder (inside the build context) of wheels for an offline install; empty = install from the index.
ARG WHEELHOUSE=
# Installed by wfdb's requirements but never imported by the API (wfdb's plotting and ecg-classify's
# summary picture only, which the image does not draw); they and the libraries' own test suites
# (pandas', numba's, scipy's: about 110 MB) are removed.
ARG UNUSED="matplotlib contourpy cycler fonttools kiwisolver pillow pyparsing"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service/ service/
# COPY needs a source that exists: without a wheelhouse it copies service/ and ignores it.
COPY ${WHEELHOUSE:-service}/ /tmp/wheelhouse/
RUN python3 -m venv /opt/venv \
 && if [ -n "$WHEELHOUSE" ]; then \
      /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheelhouse . ; \
    else \
      /opt/venv/bin/pip install --no-cache-dir . ; \
    fi \
 && /opt/venv/bin/pip uninstall --yes --quiet $UNUSED pip \
 && find /opt/venv/lib -type d -name tests -prune -exec rm -rf {} + \
 && ! /opt/venv/bin/python3 -c "import torch" 2>/dev/null

FROM ${BASE_IMAGE}
# NUMBA_CACHE_DIR: the compiled ODE solver caches its machine code where the non-root user can write.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH NUMBA_CACHE_DIR=/tmp/numba-cache \
    ECG_HOST=0.0.0.0 ECG_PORT=8000 ECG_MODELS_DIR=/app/models
COPY --from=venv /opt/venv /opt/venv
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin ecg
WORKDIR /app
COPY models/ /app/models/
RUN rm -rf /app/models/logs && chmod -R a+rX /app/models

USER ecg
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"ECG_PORT\"]}/readyz', timeout=4)"]
CMD ["ecg-serve"]
