# The image deploy/kubernetes/daemonset.yaml runs: `overlay-trace serve`.
#   docker build -t overlay-trace:0.1.0 .
# Build stage: the userspace on stable Rust, the eBPF programs with nightly + rust-src and
# bpf-linker (the usual route of overlay-trace/build.rs; see README, "Building").
# Not built by the tests: no registry is reachable where they run.
FROM debian:bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates curl gcc libc6-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/opt/rustup CARGO_HOME=/opt/cargo PATH=/opt/cargo/bin:$PATH
RUN curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal \
 && rustup toolchain install nightly --profile minimal --component rust-src \
 && cargo install bpf-linker --locked
WORKDIR /src
COPY . .
RUN cargo build --release -p overlay-trace

FROM debian:bookworm-slim
COPY --from=build /src/target/release/overlay-trace /usr/local/bin/overlay-trace
# /metrics and /healthz (deploy/kubernetes/daemonset.yaml scrapes this port).
EXPOSE 9477
ENTRYPOINT ["/usr/local/bin/overlay-trace"]
CMD ["serve", "--listen", "0.0.0.0:9477"]
