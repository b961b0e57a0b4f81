# The two commands of the README: `make demo` and `make test`.
export PATH := $(PATH):/opt/swift/usr/bin
SHELL := /bin/bash
SWIFT ?= swift

.PHONY: demo test build setup bench fuzz clean rescue

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
	set -o pipefail; $(SWIFT) test --skip-build --disable-swift-testing 2>&1 | tee .build/test.log
	set -o pipefail; scripts/fuzz.sh $(FUZZ_SECONDS) | tee .build/fuzz.log
	@# One closing line for everything: XCTest cases plus fuzz targets.
	@t=$$(sed -n 's/.*Executed \([0-9]*\) tests\{0,1\}, with \([0-9]*\) failures.*/\1 \2/p' .build/test.log | tail -1); \
	 f=$$(grep -c 'no crash' .build/fuzz.log); \
	 echo "$$(( $${t% *} + f )) passed, $${t#* } failed"

# The rescue kernel + initramfs PCs boot into (docs/rescue.md), in .build/rescue.
rescue: setup
	scripts/rescue-build.sh .build/rescue

# Each parser under libFuzzer for FUZZ_SECONDS (make test runs this too).
FUZZ_SECONDS ?= 20
fuzz:
	scripts/fuzz.sh $(FUZZ_SECONDS)

bench: setup
	bench/imaging.sh

clean:
	rm -rf .build .build-agent demo
