# lbaffd sidecar image: runs next to ovs-vswitchd and talks to it over the
# host's OVS/OVN unix sockets (mounted), so it needs no OVS binaries itself.
# Debian's python3-openvswitch brings the OVSDB IDL with its C JSON parser
# (ovs._json; PyPI's ovs wheel has only the ~10x slower pure-Python one), so
# the image is Debian's python3 with a venv that sees the system packages.
FROM debian:bookworm-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PATH=/opt/lbaffd/bin:$PATH \
    LBAFFD_RUNDIR=/run/lbaffd LBAFFD_LOG_FORMAT=json LBAFFD_METRICS_ADDRESS=127.0.0.1:9476

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-openvswitch \
    && rm -rf /var/lib/apt/lists/*

# The build context has no .git: the version setuptools-scm would read from
# the git tags comes in as a build argument (deploy/build-image.sh passes it).
ARG LBAFFD_VERSION=0+unknown
WORKDIR /src
COPY pyproject.toml README.md ./
COPY man ./man
COPY lbaffd ./lbaffd
RUN python3 -m venv --system-site-packages /opt/lbaffd \
    && SETUPTOOLS_SCM_PRETEND_VERSION="${LBAFFD_VERSION}" /opt/lbaffd/bin/pip install --no-compile . \
    && /opt/lbaffd/bin/python -c "import ovs._json" \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin lbaffd \
    && mkdir -p /run/lbaffd && chown lbaffd /run/lbaffd && chmod 0700 /run/lbaffd

# Non-root by default. Debian's OVS sockets are root:root 0750, so the
# DaemonSet runs it as uid 0 with every capability dropped; a host whose OVS
# sockets are group-accessible can keep this user.
USER 10001
EXPOSE 9476
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9476/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["lbaffd", "run"]
