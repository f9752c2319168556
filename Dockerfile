# Rampart container image.
#
#   docker build -t rampart .
#   docker run -p 80:80 -p 443:443 -v rampart-state:/var/lib/rampart rampart
#
# Two stages: a Rust toolchain image compiles the binary, and a distroless
# runtime image (glibc + libgcc + CA certificates, no shell, no package
# manager) runs it as a non-root user. Nothing in the final image can run a
# command except `rampart` itself. See docs/operations.md for the walk-through.
#
# Pinning: tags below are exact versions. For byte-for-byte reproducible
# builds, add the digest too (`FROM image:tag@sha256:...`; print it with
# `docker buildx imagetools inspect IMAGE:TAG`) and let Renovate/Dependabot
# bump both together.

# ---------------------------------------------------------------- builder --
# Same toolchain as CI (rustc 1.95.0) on Debian 12, the Debian release the
# runtime image is built from, so the binary links against the same glibc.
FROM rust:1.95.0-bookworm AS builder

WORKDIR /src

# Dependency cache: copy only the manifests first and build the dependency
# graph against placeholder sources. This layer is reused until Cargo.toml,
# Cargo.lock, Cargo's config or the profile change, so a code-only change
# recompiles just the rampart crate.
COPY Cargo.toml Cargo.lock ./
# Cargo's config (jemalloc's compiled-in options, the rustc wrapper) and the
# profile every optimised crate is compiled against (pgo/README.md): the
# dependencies are part of the profile-guided build too.
COPY .cargo ./.cargo
COPY pgo/rustc-wrapper pgo/rampart.profdata ./pgo/
# Placeholders for the two targets Cargo.toml declares ([lib] src/lib.rs,
# [[bin]] src/main.rs). --locked: fail instead of silently updating Cargo.lock.
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src

# The real sources. COPY keeps the files' original modification times, which
# can be older than the placeholder build; touching the crate roots makes
# Cargo see them as changed and rebuild rampart itself (dependencies stay cached).
COPY src ./src
RUN touch src/lib.rs src/main.rs \
 && cargo build --release --locked

# The state directory, created here because the runtime image has no shell
# (no mkdir). It is copied with the runtime user as owner below, so ACME can
# write there; a named volume mounted on it inherits that ownership.
RUN mkdir -p /out/var/lib/rampart

# ---------------------------------------------------------------- runtime --
# distroless/cc: glibc and libgcc_s (what a Rust binary links dynamically),
# CA certificates (ACME talks HTTPS to Let's Encrypt), tzdata, /etc/passwd
# with the user nonroot = 65532. The :nonroot tag already selects that user.
FROM gcr.io/distroless/cc-debian12:nonroot

# The binary, at the path HEALTHCHECK and the docs use. Owned by root and not
# writable by the runtime user.
COPY --from=builder /src/target/release/rampart /usr/local/bin/rampart

# Certificates and ACME state (account key, issued certs, renewal state).
# Owned by the runtime user: Rampart writes here.
COPY --from=builder --chown=65532:65532 /out/var/lib/rampart /var/lib/rampart

# The shipped config (the reference stack). Owned by root, read-only to the
# process: operators replace it by mounting a file or ConfigMap over it.
COPY deploy/rampart.toml /etc/rampart/rampart.toml

# `rampart` with no arguments serves this file (the --config default follows
# RAMPART_CONFIG). RUST_LOG sets the log level of the JSON diagnostics.
ENV RAMPART_CONFIG=/etc/rampart/rampart.toml \
    RUST_LOG=info

# A broken shipped config fails the build here, not at 3 a.m. in production.
# Exec form: there is no shell in this image. Running it in the runtime stage
# also proves the binary starts against the runtime image's libraries.
RUN ["/usr/local/bin/rampart", "check", "--config", "/etc/rampart/rampart.toml"]

# Numeric uid:gid (the same user :nonroot selects), so Kubernetes'
# runAsNonRoot can verify it without resolving a name.
USER 65532:65532

# Declared so `docker run` without -v still keeps state out of the container's
# writable layer. Mount a named volume here in production; back it up.
VOLUME ["/var/lib/rampart"]

# HTTP (ACME http-01, redirect) and HTTPS. A non-root process may bind them
# because the container's network namespace allows it: Docker (20.10+) sets
# net.ipv4.ip_unprivileged_port_start=0 in every container; compose and the
# Kubernetes manifests set it explicitly. No file capability (setcap) is used:
# distroless has no setcap, and a binary carrying file capabilities fails to
# start when capabilities are dropped (cap_drop: ALL) and gains nothing under
# no-new-privileges. The admin port 9901 is deliberately not EXPOSEd: it has
# no authentication and is for the internal network only.
EXPOSE 80 443

# The signal Rampart treats as "drain and exit": stop accepting, finish
# in-flight requests for up to [server] shutdown_timeout (30s in the shipped
# config), exit 0. Give `docker stop -t` / stop_grace_period more than that.
STOPSIGNAL SIGTERM

# No curl in the image: the binary checks its own admin /healthz
# (default URL http://127.0.0.1:9901/healthz; pass --url if you move the
# admin listener). start-period covers config load and listener binding.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/rampart", "healthcheck"]

# Logs: one JSON access-log line per request on stdout, JSON diagnostics on
# stderr; the container runtime collects both. Exec form, so rampart is PID 1
# and receives SIGTERM/SIGHUP directly (it reaps no children: it spawns none).
ENTRYPOINT ["/usr/local/bin/rampart"]
CMD ["run"]
