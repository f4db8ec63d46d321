# The two commands of the README, and a few helpers. Each installs what a
# fresh Debian machine lacks (cmake, ...) or stops with a one-line message.
.PHONY: demo test validate clean

demo:  ## build, start the demo catalog backend (:3000) and the gateway (:8081)
	.ci/demo

test:  ## the whole test suite (what CI runs)
	.ci/test

validate:  ## validate every file under conf/
	cargo run --release --bin flex-gateway -- validate -c conf

clean:
	cargo clean
