# The stream_app image: the Faust worker, `create-topics`, and (for docker-compose.yml) the MC sandbox.
# Kafka itself is not in here: production runs a Kafka cluster, docker-compose.yml the apache/kafka image.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STATE_DIR=/var/lib/stream_app \
    TABLE_STORE=rocksdb://

# socat only relays the compose stack's loopback-bound web ports to the host (see docker-compose.yml).
RUN apt-get update \
    && apt-get install -y --no-install-recommends socat \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependencies in their own layer: rebuilt only when the lock changes. The lock pins every package,
# rocksdict (the rocksdb extra) included; it also carries the dev tools, which are small.
COPY requirements.lock ./
RUN pip install -r requirements.lock

COPY pyproject.toml ./
COPY stream_app ./stream_app
COPY mc_sandbox ./mc_sandbox
COPY schemas ./schemas
# Editable (no deps: the lock installed them): the code then finds schemas/ and the sandbox's WSDL
# beside itself, exactly as in the repository, which a wheel install would not ship without a manifest.
RUN pip install --no-deps -e ".[rocksdb]" \
    && python -c "import rocksdict, stream_app.settings, mc_sandbox"

# Unprivileged; the state dirs exist and belong to it, so named volumes mounted there inherit that.
RUN useradd --system --uid 10001 --home-dir /var/lib/stream_app --shell /usr/sbin/nologin app \
    && mkdir -p /var/lib/stream_app /var/lib/mc_sandbox \
    && chown app:app /var/lib/stream_app /var/lib/mc_sandbox
USER app

EXPOSE 6066
CMD ["python", "-m", "stream_app", "worker"]
