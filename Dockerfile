# The reach probe image: python3 from Debian, the package in a venv, a non-root user,
# and nothing written outside /var/lib/reach (runs with a read-only root file system).
#
# Build (see docs/fleet.md; buildah as used by tests/fleet/test_image.py):
#   buildah bud --format docker -t reach-probe .
#   docker build -t reach-probe .
# Behind a TLS-intercepting proxy, pass its CA bundle to pip:
#   --build-arg PIP_CERT=/run/host-ca.crt -v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro

FROM debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/reach
COPY . /src
# A CA bundle for pip, only when one is given (an empty PIP_CERT would break pip).
ARG PIP_CERT
RUN if [ -n "$PIP_CERT" ]; then export PIP_CERT; else unset PIP_CERT; fi \
 && /opt/reach/bin/pip install --no-cache-dir --disable-pip-version-check --require-hashes \
      -r /src/requirements.lock \
 && /opt/reach/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps /src \
 && /opt/reach/bin/python -m compileall -q /opt/reach/lib \
 && mkdir -p /out/etc/reach \
 && if [ -f /src/configs/probe.example.yaml ]; then cp /src/configs/probe.example.yaml /out/etc/reach/probe.yaml; fi

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 reach \
 && useradd --system --uid 10001 --gid reach --home-dir /var/lib/reach --no-create-home \
      --shell /usr/sbin/nologin reach \
 && mkdir -p /var/lib/reach /etc/reach \
 && chown reach:reach /var/lib/reach
COPY --from=build /opt/reach /opt/reach
COPY --from=build /out/etc/reach/ /etc/reach/
ENV PATH=/opt/reach/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/var/lib/reach
USER 10001:10001
WORKDIR /var/lib/reach
# Evidence (raw observations) is the only thing the probe writes.
VOLUME ["/var/lib/reach"]
EXPOSE 9650
# Dependencies come pinned, with hashes, from requirements.lock (the fast extra included).
# /healthz needs no credentials; with --web-config-file it is served over TLS, so the check
# tries plain HTTP, then HTTPS (not verified: it only asks the local probe whether it is alive).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python3", "-c", "import ssl, sys, urllib.request as u\nfor url, ctx in (('http://127.0.0.1:9650/healthz', None), ('https://127.0.0.1:9650/healthz', ssl._create_unverified_context())):\n try:\n  sys.exit(0 if u.urlopen(url, timeout=2, context=ctx).status == 200 else 1)\n except Exception:\n  pass\nsys.exit(1)"]
ENTRYPOINT ["probe"]
CMD ["run", "--config", "/etc/reach/probe.yaml"]
