#!/bin/sh
# A throwaway CA and server certificates for the compose `production` profile: Kafka's SASL_SSL
# listener (one PEM key store, key then certificate) and Redis's TLS port. Idempotent; writes to
# $1 (default /certs). Real deployments use the operator's own CA instead.
set -eu
out="${1:-/certs}"
mkdir -p "$out"
cd "$out"
[ -f ca.crt ] && exit 0
openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj /CN=churnwatch-ca -keyout ca.key -out ca.crt
for host in kafka redis; do
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$host" -keyout "$host.key" -out "$host.csr"
  printf 'subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1\n' "$host" > "$host.ext"
  openssl x509 -req -in "$host.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 \
    -extfile "$host.ext" -out "$host.crt"
  cat "$host.key" "$host.crt" > "$host.pem"
done
chmod 644 ./*.key ./*.pem  # read by the brokers' non-root users inside this volume only
