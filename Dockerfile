# syntax=docker/dockerfile:1
# Multi-stage build: a cgo build (librdkafka comes statically linked with
# confluent-kafka-go) and a small glibc runtime image that runs as a non-root user.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=1 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/pgoutbox . \
 && mkdir -p /out/data

FROM gcr.io/distroless/base-debian12:nonroot
COPY --from=build /out/pgoutbox /usr/local/bin/pgoutbox
# The checkpoint lives here; mount a volume so it survives container restarts.
COPY --from=build --chown=65532:65532 /out/data /var/lib/pgoutbox
WORKDIR /var/lib/pgoutbox
ENV PGOUTBOX_CHECKPOINT_FILE=/var/lib/pgoutbox/pgoutbox.checkpoint
USER 65532:65532
EXPOSE 9187
ENTRYPOINT ["/usr/local/bin/pgoutbox"]
