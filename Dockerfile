# syntax=docker/dockerfile:1
#
# The Muster image: one binary, `engine`. By default it runs the daemon (`engine run`); the cluster
# agent is the same image with `agent --environment ENV --cluster NAME --api URL` as arguments.
#
#   docker build -t muster/engine:e2e .
#   docker run --rm -p 8080:8080 -e MUSTER_NATS__URL=nats://host.docker.internal:4222 muster/engine:e2e
#
# Builder: the Rust toolchain on Debian 12 (bookworm), so the binary links against the same glibc
# as the runtime image (distroless cc-debian12). No system libraries are needed: TLS is rustls with
# ring (ring's C parts only need the gcc shipped in the slim image), no OpenSSL, no libpq.
# Pin: `rust:1.95.0-slim-bookworm`; to pin the content too, append its digest
# (`docker buildx imagetools inspect rust:1.95.0-slim-bookworm`) as `@sha256:...`.
FROM rust:1.95.0-slim-bookworm AS builder

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src

# 1. Dependency layer. Only the manifests and the lock file are copied, with empty stand-ins for
#    every workspace member's sources (cargo needs each member of the workspace to have a target),
#    so this layer and its compiled dependencies are reused until Cargo.toml/Cargo.lock change.
#    (A member that declares [[bin]]/[[test]] targets with explicit paths needs stand-ins for them too.)
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY engine/Cargo.toml engine/Cargo.toml
COPY workflows/Cargo.toml workflows/Cargo.toml
COPY connectors/Cargo.toml connectors/Cargo.toml
COPY e2e/Cargo.toml e2e/Cargo.toml
RUN for member in engine workflows connectors e2e; do \
        mkdir -p "$member/src" && : > "$member/src/lib.rs"; \
    done \
    && echo 'fn main() {}' > engine/src/main.rs \
    && cargo build --release --locked -p engine \
    && rm -rf engine/src workflows/src connectors/src

# 2. The real sources of the crates the binary is made of (e2e keeps its empty stand-in: the image
#    does not need it, so test changes do not rebuild the image). COPY keeps the files' modification
#    times, which may be older than the stand-ins cargo just fingerprinted: touch them so cargo
#    rebuilds the workspace crates instead of shipping the stand-ins.
COPY engine engine
COPY workflows workflows
COPY connectors connectors
RUN find engine workflows connectors -type f -exec touch {} + \
    && cargo build --release --locked -p engine \
    && install -D -m 0755 target/release/engine /out/usr/local/bin/engine \
    && mkdir -p /out/var/lib/muster \
    && /out/usr/local/bin/engine --version

# Runtime: glibc + libgcc + CA certificates, no shell, no package manager; `nonroot` is uid/gid 65532.
# To pin the content, append the digest of gcr.io/distroless/cc-debian12:nonroot as `@sha256:...`.
FROM gcr.io/distroless/cc-debian12:nonroot

LABEL org.opencontainers.image.title="muster-engine" \
      org.opencontainers.image.description="Muster: durable workflows on NATS JetStream (engine and cluster agent)" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /out/usr/local/bin/engine /usr/local/bin/engine
# The data dir (sled journal and records store): owned by the runtime user so it is writable
# without a volume; in Kubernetes a PersistentVolumeClaim is mounted over it.
COPY --from=builder --chown=65532:65532 /out/var/lib/muster /var/lib/muster

# MUSTER_HTTP__LISTEN: the API on every interface, since loopback is unreachable from outside a
# container. Environment variables override the config file, so set it here (or pass --http) to change it.
ENV MUSTER_DATA_DIR=/var/lib/muster \
    MUSTER_HTTP__LISTEN=0.0.0.0:8080 \
    MUSTER_LOG=info

USER 65532:65532
WORKDIR /var/lib/muster

# 8080: the engine's HTTP API (/livez, /readyz, /metrics, /v1/...). 8081: the agent's health and
# metrics (its `[agent] listen`, default 127.0.0.1:8081; set 0.0.0.0:8081 in a pod).
EXPOSE 8080 8081

ENTRYPOINT ["engine"]
CMD ["run"]
