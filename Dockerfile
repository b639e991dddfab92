# syntax=docker/dockerfile:1.7
#
# The akv-bridge container image: one static binary on distroless, nothing else.
#
#   docker buildx build --build-arg COMMIT="$(git rev-parse HEAD)" \
#     --build-arg VERSION=0.1.0 -t ghcr.io/akv-bridge/akv-bridge:0.1.0 .
#
# - Built with `--locked` from Cargo.lock and default features: the `dev` feature (mock
#   vault, `akv-bridge dev`) is off, so the image carries no test double.
# - Static (musl): the final stage has no libc, no shell, no package manager.
# - Runs as 65532:65532 (distroless "nonroot"), the uid the manifests in deploy/ expect.
#
# Base images are pinned by tag: the Rust release the workspace's rust-version names, and
# the Alpine branch. For a release, pin them by digest as well (a tag can be moved, a
# digest cannot) by appending it to the FROM lines, e.g.
#   FROM rust:1.88.0-alpine3.22@sha256:<digest> AS builder
#   FROM gcr.io/distroless/static-debian12:nonroot@sha256:<digest>
# and keep the digests the build resolved (buildx --metadata-file) with the release.

FROM rust:1.88.0-alpine3.22 AS builder

# Fail a RUN on any failing command of a pipeline, not only the last one.
SHELL ["/bin/ash", "-eo", "pipefail", "-c"]

# The build toolchain for aws-lc-sys (the TLS and crypto provider under rustls), which
# compiles C with cmake/clang/perl and links statically against musl. Build tools only;
# none of them reaches the final image. Not pinned to package versions (DL3018): an
# Alpine branch keeps only the current build of each package, so exact pins break the
# build at every security update; the branch itself is fixed by the base image's tag.
# hadolint ignore=DL3018
RUN apk add --no-cache musl-dev cmake clang perl make

# Passed into the build: build.rs embeds it in `akv-bridge --version`.
ARG COMMIT=unknown
ENV AKV_BRIDGE_COMMIT=${COMMIT}
# Reproducible paths: no absolute source or home paths in panic messages. (Static linking
# is the musl target's default; setting +crt-static here would also apply to proc-macros,
# which musl can only build dynamically. The readelf check below enforces it instead.)
ENV RUSTFLAGS="--remap-path-prefix=/src=. --remap-path-prefix=/usr/local/cargo=cargo"
ENV CARGO_TERM_COLOR=never

WORKDIR /src
# The whole workspace (mock-vault is a member and must be present for Cargo to load the
# workspace, though the default features never build it); .dockerignore keeps target/,
# fuzz/, .git and the virtual environments out.
COPY . .

# Registry and target as BuildKit caches: fast rebuilds, nothing of them in a layer.
# The binary is copied out of the cached target/ in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin akv-bridge \
 && mkdir -p /out \
 && cp target/release/akv-bridge /out/akv-bridge

# Refuse to ship a binary that is not static (it would fail at start on distroless/static),
# and check that it runs.
RUN if readelf -d /out/akv-bridge | grep -q NEEDED; then \
      echo "akv-bridge is dynamically linked" >&2; exit 1; \
    fi \
 && /out/akv-bridge --version

FROM gcr.io/distroless/static-debian12:nonroot

ARG COMMIT=unknown
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="akv-bridge" \
      org.opencontainers.image.description="Kubernetes KMS v2 plugin and Secrets Store CSI provider backed by Azure Key Vault" \
      org.opencontainers.image.source="https://github.com/akv-bridge/akv-bridge" \
      org.opencontainers.image.url="https://github.com/akv-bridge/akv-bridge" \
      org.opencontainers.image.documentation="https://github.com/akv-bridge/akv-bridge/blob/main/README.md" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="akv-bridge" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}" \
      org.opencontainers.image.base.name="gcr.io/distroless/static-debian12:nonroot"

# Only the binary. distroless/static provides CA certificates (for Key Vault and Entra
# TLS), /etc/passwd with the nonroot user, and tzdata; no shell.
COPY --from=builder --chown=0:0 --chmod=0555 /out/akv-bridge /akv-bridge

# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532

# checkov:skip=CKV_DOCKER_2:Kubernetes ignores image HEALTHCHECKs; the manifests in deploy/ probe /healthz and /readyz, and the image has no shell or HTTP client to run one.
ENTRYPOINT ["/akv-bridge"]
