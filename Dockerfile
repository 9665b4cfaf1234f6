# Runtime image: the service and the shipped model, no torch. Build: make docker
FROM python:3.11-slim AS build
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml requirements.lock Makefile README.md ./
COPY service/ service/
COPY training/__init__.py training/__init__.py
RUN make install VENV=/opt/venv

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --from=build /app /app
COPY models/ models/
ENV ST_HOST=0.0.0.0 ST_PORT=8000 PATH=/opt/venv/bin:$PATH
USER app
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/readyz').status == 200 else 1)"
CMD ["sensitive-topics", "serve"]
