# syntax=docker/dockerfile:1
#
# commitd in a container:
#   docker build --build-arg COMMITD_GIT_COMMIT="$(git rev-parse --short HEAD)" -t commitd .
#   docker run -d --name commitd \
#     -v /run/containerd:/run/containerd \
#     -v /var/lib/containerd:/var/lib/containerd \
#     -v /run/commitd:/run/commitd \
#     --cap-add SYS_ADMIN \
#     commitd
# containerd's directories are mounted at the same paths as on the host:
# the overlay fast path opens the snapshot paths containerd reports. Of the
# capabilities deploy/systemd/commitd.service explains, Docker's default set
# lacks only SYS_ADMIN (trusted.* xattrs). A socket group must be numeric
# here (--socket-group 999): the image's /etc/group knows only its own.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder

# containerd-client's build generates its gRPC code with protoc; gzip links
# ISA-L (libisal-dev). The versions are bookworm's; follow Debian's updates
# (apt-cache policy protobuf-compiler libisal-dev).
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler=3.21.12-3+deb12u1 \
       libisal-dev=2.30.0-5 \
    && rm -rf /var/lib/apt/lists/*

# The build itself runs as an unprivileged user.
RUN groupadd --gid 10001 builder \
    && useradd --create-home --uid 10001 --gid 10001 builder \
    && install -d -o 10001 -g 10001 /home/builder/src
USER 10001:10001
ENV CARGO_HOME=/home/builder/.cargo
WORKDIR /home/builder/src
COPY --chown=10001:10001 . .

# Shown by /version (the .git directory is not sent to the build).
ARG COMMITD_GIT_COMMIT=unknown
RUN --mount=type=cache,target=/home/builder/.cargo/registry,uid=10001,gid=10001 \
    --mount=type=cache,target=/home/builder/src/target,uid=10001,gid=10001 \
    cargo build --release --locked -p commitd \
    && cp target/release/commitd /home/builder/commitd

# The binary needs glibc and libgcc_s, both in the slim image, and ISA-L.
FROM debian:bookworm-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends libisal2=2.30.0-5 \
    && rm -rf /var/lib/apt/lists/*

COPY --from=builder /home/builder/commitd /usr/local/bin/commitd
COPY config/commitd.toml /etc/commitd/commitd.toml

# No USER: commitd runs as root, the image's default user. The overlay fast
# path reads containers' upper directories under /var/lib/containerd and
# writes, with owners, modes and trusted.* xattrs kept, into the snapshots
# it prepares there; only root (with the capabilities above) can.
ENTRYPOINT ["/usr/local/bin/commitd"]
CMD ["--config", "/etc/commitd/commitd.toml"]
