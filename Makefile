# The two commands of the README, and a few helpers. Each installs what a
# fresh Debian machine lacks (cmake, ...) or stops with a one-line message.
.PHONY: demo test validate bench fuzz deb image clean

demo:  ## build, start the demo catalog backend (:3000) and the gateway (:8081)
	.ci/demo

test:  ## the whole test suite (what CI runs)
	.ci/test

validate:  ## validate every file under conf/
	cargo run --release --bin flex-gateway -- validate -c conf

bench:  ## side-by-side load benchmark with nginx and HAProxy (~8 min)
	benches/load.sh

fuzz:  ## run the cargo-fuzz targets, 10 minutes each (FUZZ_SECONDS, FUZZ_TARGETS, FUZZ_JOBS)
	.ci/fuzz

deb:  ## the Debian package, built with the dist profile (cargo-deb)
	.ci/deps
	cargo deb --version >/dev/null 2>&1 || cargo install cargo-deb --locked
	cargo deb --profile dist --strip

image:  ## the container image flex-gateway:latest from the dist build (docker, else podman)
	.ci/deps podman runc ca-certificates
	cargo build --profile dist --bin flex-gateway
	CONTAINERS_CONF=$${CONTAINERS_CONF:-$(CURDIR)/packaging/container/podman-ci.conf} packaging/container/build-image --binary target/dist/flex-gateway --tag flex-gateway:latest

clean:
	cargo clean
