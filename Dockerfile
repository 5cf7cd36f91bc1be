# syntax=docker/dockerfile:1.7
#
# One image for the whole pipeline (docs/decisions/0019-one-image-and-generated-manifests.md): the
# `storepulse` CLI, which runs any service (`storepulse run compactor`) and the
# operator commands (topics, migrate, keys, dlq, rebuild, config show).
#
#   docker build -t storepulse:dev .
#   docker run --rm storepulse:dev run ingest
#
# The runtime stage is distroless (glibc, libssl, CA certificates; no shell, no
# package manager), runs as uid/gid 65532, writes nothing to its root filesystem
# (run it read-only), and checks itself with `storepulse healthcheck` (no curl):
# set HEALTHCHECK_URL to the service's /healthz (ingest's :8080 is the default).

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
# librdkafka is built from source by rdkafka-sys (gcc, make); with the kafka-tls
# feature it links OpenSSL for TLS and SASL/SCRAM.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config perl libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --features kafka-tls --bin storepulse \
 && install -D -m 0755 target/release/storepulse /out/storepulse

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="storepulse" \
      org.opencontainers.image.description="StorePulse: ingest, compactor, rules, forecaster, notifier and the storepulse CLI" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/storepulse/storepulse"
COPY --from=build /out/storepulse /usr/local/bin/storepulse
# Examples only: deployments mount their own config, rules and policy files.
COPY config/ /etc/storepulse/examples/
USER 65532:65532
WORKDIR /home/nonroot
EXPOSE 8080 9102 9103 9104 9105
ENV HEALTHCHECK_URL=http://127.0.0.1:8080/healthz
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/storepulse", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/storepulse"]
CMD ["--help"]
