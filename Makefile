# The two commands of the README: `make run` and `make test`. Everything else is a helper.
.PHONY: run test stop clean lint

run:    ## set up everything, start wallet + PSP simulator + bridge, run demo sessions
	scripts/run.sh

test:   ## lint, type-check, the whole test suite, and the ledger check
	scripts/test.sh

stop:   ## stop the bridge, simulator and wallet (and private Postgres/Redis if any)
	scripts/stop.sh --all

lint:
	scripts/buf.sh lint && .venv/bin/ruff check . && .venv/bin/mypy wallet_core gateway_bridge service_kit

clean:
	scripts/stop.sh --all; rm -rf .venv gen .run build dist
