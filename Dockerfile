# The reach probe image: python3 from Debian, the package in a venv, a non-root user,
# and nothing written outside /var/lib/reach (runs with a read-only root file system).
#
# Build (see docs/fleet.md; buildah as used by tests/fleet/test_image.py):
#   buildah bud --format docker -t reach-probe .
#   docker build -t reach-probe .
# Behind a TLS-intercepting proxy, pass its CA bundle to pip:
#   --build-arg PIP_CERT=/run/host-ca.crt -v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro
#
# Pinning (docs/reliability.md section 5). Runtime dependencies come from requirements.lock
# and the build backend (setuptools) from requirements-build.lock, both with hashes; the
# package itself is built without an isolated environment, so pip fetches nothing unpinned.
# The base image is named by tag: this repository was
# built where no registry is reachable, so no digest could be checked honestly, and a digest
# copied from elsewhere would pin something nobody here verified. Pin it when you build:
#   --build-arg BASE_IMAGE=docker.io/library/debian:bookworm-slim@sha256:<digest>
# (the digest from `docker buildx imagetools inspect debian:bookworm-slim`, or your mirror).
# Debian packages are pinned to bookworm's versions (hadolint DL3008); to take a
# ca-certificates security update, pass its version from bookworm-security:
#   --build-arg CA_CERTIFICATES_VERSION=20250419~deb12u2
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim
ARG PYTHON3_VERSION=3.11.2-1+b1
ARG CA_CERTIFICATES_VERSION=20230311+deb12u1

FROM ${BASE_IMAGE} AS build
ARG PYTHON3_VERSION
ARG CA_CERTIFICATES_VERSION
RUN apt-get update \
 && apt-get install -y --no-install-recommends "python3=${PYTHON3_VERSION}" \
      "python3-venv=${PYTHON3_VERSION}" "ca-certificates=${CA_CERTIFICATES_VERSION}" \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/reach
COPY . /src
# A CA bundle for pip, only when one is given (an empty PIP_CERT would break pip).
ARG PIP_CERT
RUN if [ -n "$PIP_CERT" ]; then export PIP_CERT; else unset PIP_CERT; fi \
 && /opt/reach/bin/pip install --no-cache-dir --disable-pip-version-check --require-hashes \
      -r /src/requirements.lock \
 && /opt/reach/bin/pip install --no-cache-dir --disable-pip-version-check --require-hashes \
      -r /src/requirements-build.lock \
 && /opt/reach/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps \
      --no-build-isolation /src \
 && /opt/reach/bin/python -m compileall -q /opt/reach/lib \
 && mkdir -p /out/etc/reach \
 && if [ -f /src/configs/probe.example.yaml ]; then cp /src/configs/probe.example.yaml /out/etc/reach/probe.yaml; fi

FROM ${BASE_IMAGE}
ARG PYTHON3_VERSION
ARG CA_CERTIFICATES_VERSION
RUN apt-get update \
 && apt-get install -y --no-install-recommends "python3=${PYTHON3_VERSION}" \
      "ca-certificates=${CA_CERTIFICATES_VERSION}" \
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
    HOME=/var/lib/reach \
    REACH_HEALTH_SOCKET=/var/lib/reach/healthz.sock
USER 10001:10001
WORKDIR /var/lib/reach
# Evidence (raw observations) is the only thing the probe writes.
VOLUME ["/var/lib/reach"]
EXPOSE 9650
# Dependencies come pinned, with hashes, from requirements.lock (the fast extra included).
# The health check asks /healthz on the Unix socket `probe run` opens at REACH_HEALTH_SOCKET
# (in the evidence volume): no TLS, no credentials, no network, so it works whatever the
# port requires (client certificates included) and no flood on the port can starve it.
# Without the socket it falls back to http, then https (unverified: it only asks the
# local probe whether it is alive) on 127.0.0.1:9650.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python3", "-c", "import os, socket, ssl, sys\ndef ok(s):\n s.settimeout(4)\n s.sendall(b'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n')\n return s.recv(64).split()[1:2] == [b'200']\ntry:\n s = socket.socket(socket.AF_UNIX)\n s.settimeout(4)\n s.connect(os.environ['REACH_HEALTH_SOCKET'])\n sys.exit(0 if ok(s) else 1)\nexcept (OSError, KeyError):\n pass\nfor tls in (False, True):\n try:\n  s = socket.create_connection(('127.0.0.1', 9650), timeout=4)\n  s = ssl._create_unverified_context().wrap_socket(s) if tls else s\n  if ok(s):\n   sys.exit(0)\n except OSError:\n  pass\nsys.exit(1)"]
ENTRYPOINT ["probe"]
CMD ["run", "--config", "/etc/reach/probe.yaml"]
