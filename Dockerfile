# syntax=docker/dockerfile:1
# Multi-stage build: a static pingfleet binary on a distroless base, run as
# a non-root user. Workers need unprivileged ICMP ("ping") sockets: give the
# container net.ipv4.ping_group_range="0 2147483647" (docker-compose.yml does).
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# docker build --build-arg VERSION=$(git describe --tags) --build-arg COMMIT=$(git rev-parse --short=12 HEAD)
ARG VERSION=
ARG COMMIT=
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.buildVersion=${VERSION} -X main.buildCommit=${COMMIT}" -o /out/pingfleet ./cmd/pingfleet

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/pingfleet /usr/local/bin/pingfleet
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/pingfleet"]
CMD ["worker"]
