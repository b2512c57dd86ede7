# omnistock: multi-stage image. The builder installs the wheel into a venv; the runtime is slim,
# runs as a non-root user, keeps the journal and file snapshots in the /data volume and numba's
# compiled kernels in a writable cache dir (warmed at build time).
#
#   docker build -t omnistock .
#   docker run -p 50051:50051 -v omnistock-data:/data \
#       -v $PWD/tokens.toml:/etc/omnistock/tokens:ro omnistock
#
# With auth off the server binds loopback only, so the image listens on 0.0.0.0 and expects a
# tokens file at $OMNISTOCK_TOKENS (mount one, or override OMNISTOCK_LISTEN=127.0.0.1:50051).
# Every `omnistock serve` flag has an OMNISTOCK_* variable (docs/server.md).

FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --upgrade pip build
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY server ./server
COPY bench ./bench
COPY proto ./proto
RUN /opt/venv/bin/python -m build --wheel --outdir /wheels . \
 && /opt/venv/bin/pip install /wheels/*.whl \
 && /opt/venv/bin/pip uninstall -y build

FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NUMBA_CACHE_DIR=/var/cache/numba \
    OMNISTOCK_LISTEN=0.0.0.0:50051 \
    OMNISTOCK_DATA_DIR=/data \
    OMNISTOCK_TOKENS=/etc/omnistock/tokens
RUN groupadd --system --gid 10001 omnistock \
 && useradd --system --uid 10001 --gid omnistock --home-dir /nonexistent --shell /usr/sbin/nologin omnistock \
 && mkdir -p /data /var/cache/numba /etc/omnistock \
 && chown omnistock:omnistock /data /var/cache/numba
COPY --from=builder /opt/venv /opt/venv
USER omnistock
# Compile every kernel once into the cache (reused when the host CPU matches; else recompiled
# at start, still before the server reports SERVING).
RUN python -c "from server.app import warm_up; warm_up()"
VOLUME ["/data"]
EXPOSE 50051 9100
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["omnistock", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["omnistock"]
CMD ["serve"]
