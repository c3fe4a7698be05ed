# tapwire container image: the agent on a minimal glibc base.
#
# Build (from the repository root; the commit is shown by `tapwire --version`):
#   docker build --build-arg TAPWIRE_GIT_COMMIT="$(git rev-parse --short=12 HEAD)" -t tapwire .
#
# Run. The agent loads eBPF programs and reads other processes' memory maps, so it
# needs the host's PID namespace, a few capabilities and the host's /sys:
#   docker run -d --name tapwire \
#     --pid=host --network=host \
#     --cap-drop=ALL --cap-add=BPF --cap-add=PERFMON --cap-add=SYS_ADMIN \
#     --cap-add=SYS_PTRACE --cap-add=DAC_READ_SEARCH \
#     --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
#     --ulimit memlock=-1 \
#     -v /sys:/sys:ro \
#     -v /var/lib/tapwire:/var/lib/tapwire \
#     -v "$PWD/qpoint.yaml:/etc/tapwire/qpoint.yaml:ro" \
#     -e S3_ACCESS_KEY -e S3_SECRET_KEY \
#     tapwire --config /etc/tapwire/qpoint.yaml
#
#   --pid=host          processes are found through /proc and selected by host pid
#   --network=host      the status server (127.0.0.1:10001) is reachable on the host
#   seccomp/apparmor    default profiles refuse bpf() and perf_event_open()
#   /sys                tracepoint ids (tracefs), BTF (/sys/kernel/btf/vmlinux), cgroups
#   /var/lib/tapwire    the S3 stores' spool survives a restart
# Without an object store in the config, payloads are written nowhere.

# --- build: Rust stable for the agent, nightly + bpf-linker for the eBPF programs
FROM rust:1.95-bookworm AS build

# llvm-22-dev: bpf-linker links against the nightly toolchain's LLVM. Not pinned:
# it comes from bookworm-security, whose updates replace the old version.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends llvm-22-dev \
    && rm -rf /var/lib/apt/lists/*
RUN rustup toolchain install nightly --profile minimal --component rust-src \
    && LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker --version 0.13.0 \
        --no-default-features --features llvm-22 \
    && rm -rf /usr/local/cargo/registry

# The project builds as an unprivileged user, with its own cargo cache.
RUN useradd --create-home --uid 10001 build
USER 10001
WORKDIR /home/build/tapwire
ENV CARGO_HOME=/home/build/.cargo
COPY --chown=build:build . .
ARG TAPWIRE_GIT_COMMIT=unknown
ENV TAPWIRE_GIT_COMMIT=${TAPWIRE_GIT_COMMIT}
RUN cargo build --release --locked --package tapwire \
    && install -D -m 0755 target/release/tapwire /home/build/out/tapwire \
    && install -D -m 0644 deploy/config/qpoint.yaml /home/build/out/qpoint.yaml

# --- runtime: glibc and libgcc only; the binary needs nothing else
FROM gcr.io/distroless/cc-debian12:nonroot

LABEL org.opencontainers.image.title="tapwire" \
      org.opencontainers.image.description="HTTP(S) capture agent for Linux, via eBPF" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /home/build/out/tapwire /usr/local/bin/tapwire
COPY --from=build /home/build/out/qpoint.yaml /etc/tapwire/qpoint.yaml
# Loading eBPF programs needs root's capabilities in the host's user namespace
# (a non-root user gets no effective capabilities from --cap-add); the run
# command above drops every other one.
# hadolint ignore=DL3002
USER 0:0
ENV TAPWIRE_CONFIG=/etc/tapwire/qpoint.yaml \
    TAPWIRE_LOG_ENCODING=json
EXPOSE 10001
ENTRYPOINT ["/usr/local/bin/tapwire"]
