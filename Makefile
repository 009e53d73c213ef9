# The two commands of the README: `make run` and `make test`. Everything else is a helper.
.PHONY: run test stop clean lint load bench bench-routing faults infra-check image-check

run:    ## set up everything, start wallet + PSP simulator + bridge, run demo sessions
	scripts/run.sh

test:   ## lint, type-check, the whole test suite, and the ledger check
	scripts/test.sh

stop:   ## stop the bridge, simulator and wallet (and private Postgres/Redis if any)
	scripts/stop.sh --all

load:   ## one Locust scenario against the running system: make load SCENARIO=game [DURATION=30s]
	scripts/loadtest.sh $(or $(SCENARIO),game) $(or $(DURATION),30s)

bench:  ## the benchmark table (docs/PERFORMANCE.md): starts its own servers
	scripts/bench.sh

bench-routing: ## the routing benchmark (docs/ROUTING.md): 10 seeded runs, no servers, ~10 s
	.venv/bin/python -m loadtests.routing_bench

faults: ## the fault scenarios and their results table (FAULTS_SECONDS=60 for a soak)
	scripts/faults.sh

infra-check: ## the wallet and bridge on real engines: Postgres failover, PgBouncer, Redis Cluster, Prometheus (docs/SCALING.md)
	scripts/infra-check.sh

image-check: ## build the container image offline and run it against local Postgres and Redis (deploy/README.md)
	scripts/image-check.sh

lint:
	scripts/buf.sh lint && .venv/bin/ruff check . && .venv/bin/mypy wallet_core gateway_bridge psp_simulator service_kit wallet_client

clean:
	scripts/stop.sh --all; rm -rf .venv gen .run build dist
