# syntax=docker/dockerfile:1
# kubedojo-data-api container image: a statically linked binary on distroless/static.
#
#   docker build -t kubedojo-data-api:0.1.0 .
#   docker run --rm kubedojo-data-api:0.1.0 --help
#
# The build step is the same command as scripts/build-static.sh (which runs it on a
# machine without Docker and checks that the result is static): glibc with
# crt-static (a static-pie), stripped of the release profile's line tables, so the
# final stage needs no libc. The toolchain is the one pinned in
# rust-toolchain.toml (rustup installs it if the image's differs).

FROM rust:1.95 AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked --target x86_64-unknown-linux-gnu --bin kubedojo-data-api \
    && cp target/x86_64-unknown-linux-gnu/release/kubedojo-data-api /kubedojo-data-api \
    && strip /kubedojo-data-api \
    && ldd /kubedojo-data-api 2>&1 | grep -Eq 'statically linked|not a dynamic executable' \
    && /kubedojo-data-api --version

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="kubedojo-data-api" \
      org.opencontainers.image.description="Kubernetes aggregated API server: metrics.k8s.io (drop-in for metrics-server) and data.kubedojo.io DataRecords" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /kubedojo-data-api /kubedojo-data-api
# distroless's nonroot user; the chart and manifests run as the same UID/GID.
USER 65532:65532
# 10250 is the default --secure-port (unprivileged, no capability needed).
EXPOSE 10250
# metrics-server style: the arguments are the server's flags.
ENTRYPOINT ["/kubedojo-data-api"]
