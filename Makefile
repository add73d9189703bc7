.PHONY: setup demo test bench package-check image
setup:
	bash scripts/setup.sh
demo: setup
	.venv/bin/redis-raft-proxy demo $(ARGS)
test:
	bash scripts/test.sh
package-check: setup
	bash scripts/package_check.sh
image:
	bash scripts/image.sh
bench: setup
	.venv/bin/pip install -q -e '.[bench]'
	.venv/bin/python benchmarks/throughput
