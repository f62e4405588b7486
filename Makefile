# meshmail — the two commands that matter: `make run` and `make test`.
# Both install what they need first (`make deps`, Debian packages, as root).

SHELL := /bin/bash
CARGO ?= cargo

# Everything the build and the tests need, from Debian.
DEB_PACKAGES := build-essential pkg-config nettle-dev libssl-dev libclang-dev \
	postfix dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd nsd \
	swaks libnet-ssleay-perl libio-socket-ssl-perl libauthen-sasl-perl \
	msmtp isync fetchmail bind9-dnsutils ca-certificates gnupg gpgsm openssl curl python3 thunderbird

.PHONY: all deps build release run test lint fmt clean bench compliance

all: build

# A fast no-op when every package is installed; otherwise one non-interactive apt-get run.
# "No configuration" keeps Postfix unconfigured: the tests start private instances.
deps:
	@missing=$$(for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		export DEBIAN_FRONTEND=noninteractive; \
		echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; \
		apt-get update -q && apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "cargo is missing: install Rust (rustup)"; exit 1; }

build: deps
	$(CARGO) build

release: deps
	$(CARGO) build --release

# The main job on an embedded default (grows with each capability into the full demo).
run: build
	bash integration/demo.sh

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

# Every test: unit tests, then integration tests against real NSD, HTTPS, gpg, gpgsm, openssl.
test: deps lint
	$(CARGO) test --lib --bins --tests

# Benchmarks print figures next to a baseline measured in the same run (not asserted).
bench: deps
	$(CARGO) build --release --example smtp_load --example imap_load --example pop3_load --example recrypt_bench --example store_load
	# Built on its own, as `make release` builds it: with the examples, dev-dependency features
	# would make a different binary, whose start-up functions src/startup.order does not name.
	$(CARGO) build --release --bin meshmail
	bash integration/bench/smtp_bench.sh
	bash integration/bench/sidecar_bench.sh
	bash integration/bench/imap_bench.sh
	bash integration/bench/pop3_bench.sh
	bash integration/bench/store_bench.sh
	./target/release/examples/recrypt_bench

# Dovecot's imaptest suite straight to Dovecot and through meshmail (another login, the mapped
# account), side by side. imaptest is built outside this repository (README, "Compliance").
compliance: deps
	$(CARGO) build --bin meshmail
	IMAPTEST="$(IMAPTEST)" bash integration/compliance.sh

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
