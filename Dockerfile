# Wharf and the example guests, built from this checkout with the README's own commands,
# in a small Debian runtime image that runs as an unprivileged user.
#
#   docker build -t wharf .
#   docker run --rm -p 8080:8080 wharf        # or: docker compose up (docker-compose.yml)
#
# The image serves the examples with deploy/wharf.json; give it your own config with
# `--config` (see docs/operations.md#containers). A test (scripts/check-deploy) checks
# that the build commands below are the README's and that every flag exists.

# ---- build ----------------------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
# The README's build commands, in its order (scripts/setup installs the wasm targets and
# the Debian packages the guests need; the image builds as root, so it needs no sudo).
RUN ./scripts/setup
RUN ./scripts/build-examples
RUN cargo build --release --locked

# ---- runtime --------------------------------------------------------------------------
FROM debian:bookworm-slim
# curl: the HEALTHCHECK below, and talking to the control socket inside the container.
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 wharf \
    && useradd --system --uid 10001 --gid wharf --home-dir /var/lib/wharf --no-create-home wharf \
    && install -d -o wharf -g wharf -m 0700 /var/lib/wharf \
    && install -d -o wharf -g wharf -m 0755 /run/wharf
COPY --from=build /src/target/release/wharf /usr/local/bin/wharf
COPY --from=build /src/target/wasm/ /usr/local/share/wharf/examples/
COPY deploy/wharf.json /etc/wharf/wharf.json
USER wharf
WORKDIR /var/lib/wharf
EXPOSE 8080
# The state dir (committed config, history, compiled modules) and the control socket's
# directory: mount a volume on the first, and the second to reach the socket from outside.
VOLUME ["/var/lib/wharf"]
# SIGQUIT drains: the listeners close, requests in flight finish (up to --drain-timeout,
# 30 s by default), then Wharf exits 0. SIGTERM would cut them (docs/operations.md#stopping).
STOPSIGNAL SIGQUIT
# Healthy when the control API answers: independent of the config the image runs.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "--unix-socket", "/run/wharf/control.sock", "http://localhost/status"]
ENTRYPOINT ["wharf"]
CMD ["--statedir", "/var/lib/wharf", "--control", "unix:/run/wharf/control.sock", "--config", "/etc/wharf/wharf.json"]
