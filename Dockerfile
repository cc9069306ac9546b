# The one `palisade` binary every Palisade process runs (deploy/kubernetes uses it as
# ghcr.io/palisade-mesh/palisade). Build: docker build -t palisade:dev .
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin palisade

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/palisade /usr/local/bin/palisade
USER 65532:65532
ENTRYPOINT ["palisade"]
