# The two commands of README.md. Both set up what a fresh machine lacks first (scripts/setup.sh).
.PHONY: setup demo test lint

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/provisioner demo --dir .demo $(ARGS)

test: setup
	.venv/bin/python -m pytest -q -p no:cacheprovider

lint: setup
	.venv/bin/ruff check provisioner bridge tests bench
	.venv/bin/ruff format --check provisioner bridge tests bench
	.venv/bin/mypy
