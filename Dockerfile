# Runtime image: the service and the shipped model, no torch. Build: make docker
FROM python:3.11-slim AS build
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml requirements.lock Makefile README.md ./
COPY service/ service/
COPY training/__init__.py training/__init__.py
RUN make install VENV=/opt/venv \
    && /opt/venv/bin/pip uninstall -y -q pip setuptools wheel

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --from=build /app /app
# the model the service serves (others: build with --build-arg MODEL=minilm-en, or mount one)
ARG MODEL=e5-multi
COPY models/${MODEL}/ models/${MODEL}/
ENV ST_HOST=0.0.0.0 ST_PORT=8000 ST_MODEL_DIR=/app/models/${MODEL} PATH=/opt/venv/bin:$PATH
USER app
EXPOSE 8000
# polls the port the service listens on (ST_PORT may be changed at `docker run`)
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
  CMD python -c "import os,sys,urllib.request; port = os.environ.get('ST_PORT', '8000'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/readyz', timeout=4).status == 200 else 1)"
CMD ["sensitive-topics", "serve"]
