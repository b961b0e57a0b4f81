# The two commands of the README: `make demo` and `make test`.
export PATH := $(PATH):/opt/swift/usr/bin
SWIFT ?= swift

.PHONY: demo test build setup bench fuzz clean

setup:
	@scripts/setup.sh

build: setup
	$(SWIFT) build --product lifeboat

# Builds, makes a sample disk, backs it up, restores it to a new file, verifies.
demo: build
	@scripts/demo.sh "$$($(SWIFT) build --show-bin-path)/lifeboat"

# Every test: pure parser tests, store tests, and the engine tests that use real
# sfdisk/sgdisk/mkfs/e2fsck/mount as oracles (those need root, as CI has).
test: setup
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build
	scripts/fuzz.sh $(FUZZ_SECONDS)

# Each parser under libFuzzer for FUZZ_SECONDS (make test runs this too).
FUZZ_SECONDS ?= 20
fuzz:
	scripts/fuzz.sh $(FUZZ_SECONDS)

bench: setup
	bench/imaging.sh

clean:
	rm -rf .build demo
