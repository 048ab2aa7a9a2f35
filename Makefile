# Test, lint and demo entry points; the scripts do their own (idempotent) setup.
.PHONY: test lint demo

test:
	tests/run

lint:
	.venv/bin/ruff check ipvland tests
	.venv/bin/mypy

demo:
	tests/demo
