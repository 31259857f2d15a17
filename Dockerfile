# Build once, run any role: `hilt api`, `hilt worker`, `hilt migrate`.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin hilt --bin hilt-worker

FROM debian:bookworm-slim
RUN useradd --system --home /var/lib/hilt hilt && mkdir -p /var/lib/hilt && chown hilt /var/lib/hilt
COPY --from=build /src/target/release/hilt /src/target/release/hilt-worker /usr/local/bin/
USER hilt
WORKDIR /var/lib/hilt
ENTRYPOINT ["hilt"]
