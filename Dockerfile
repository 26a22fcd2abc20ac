# kv: a static binary on distroless, built in a pinned Go image. No credentials live here: every
# setting comes from the environment at run time (see docker-compose.yml and the README).

FROM golang:1.26.8 AS build
WORKDIR /src
# Modules first, in their own layer, so code changes do not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/kv .

# docker-compose run test: the black-box tests/ suite against the running service (KV_URL), once it is ready.
FROM build AS test
ENV CGO_ENABLED=0
CMD ["go", "test", "-count=1", "-v", "./tests/"]

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/kv /kv
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/kv"]
