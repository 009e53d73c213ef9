"""Deployment artefacts (deploy/, .dockerignore), checked offline: no Docker engine, no cluster.

Three kinds of checks:
- schemas: the Compose file against the Compose specification (check-jsonschema's vendored
  copy; `docker compose config` too where the plugin exists), every Kubernetes manifest
  against the Kubernetes 1.31 OpenAPI schemas bundled by kubernetes-validate (strict: an
  unknown field fails);
- rules that matter in production: non-root image with a health check, bounded and probed
  containers, headless wallet Service, a disruption budget per Deployment, shutdown budgets
  that cover the services' grace periods, no secret literals anywhere;
- drift: the environment Compose and the ConfigMaps hand each process is accepted by that
  service's own settings loader, every command they run exists, and the dashboard queries
  only metrics the services define.
"""

from __future__ import annotations

import functools
import importlib
import json
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
KUBERNETES_VERSION = "1.31.0"
NAMESPACE = "wallet-platform"
BIN = Path(sys.executable).parent
DEV_ONLY_MANIFESTS = {"simulator.yaml"}
# The PSP simulator is a development package: only deploy/Dockerfile's dev target carries it,
# under its own image name; the default target (the last stage) is the production image.
SIMULATOR_PACKAGE = "psp_simulator"
DEV_TARGET = "dev"
PRODUCTION_IMAGE = "wallet-platform"
DEV_IMAGE = "wallet-platform-dev"
# Where scripts/image-check.sh puts the wheels the offline build installs (INSTALL_FROM=wheels).
OFFLINE_WHEELS = "deploy/offline/wheels"
# Setting names that hold a secret: they may only arrive through a *_FILE variable, an
# env_file, or a Kubernetes secretKeyRef, never as a literal value.
SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|API_KEY|HMAC|CALLERS|DATABASE_URL)")
# Values that look like a real credential wherever they appear, including a URL with a password
# (so REDIS_URL may be a literal only while it carries none).
SECRET_VALUE = re.compile(r"(sk_(live|test)_\w{8,}|whsec_\w{8,}|AQE\w{8,}|\b[0-9a-fA-F]{32,}\b"
                          r"|://[^/\s:@]+:[^/\s@]+@)")
# Slack between a pod's termination budget and preStop + the service's drain grace.
SHUTDOWN_MARGIN_S = 10


# ------------------------------------------------------------------------------ loading


@functools.cache
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


def our_services() -> dict[str, dict[str, Any]]:
    """Compose services that run our image (the ones built from deploy/Dockerfile)."""
    return {name: svc for name, svc in compose()["services"].items() if "build" in svc}


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


@functools.cache
def manifests() -> tuple[tuple[str, dict[str, Any]], ...]:
    """(file name, document) for every Kubernetes object, dev-only files included."""
    return tuple((path.name, doc) for path in manifest_files()
                 for doc in yaml.safe_load_all(path.read_text()) if doc)


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in manifests() if doc["kind"] == kind}


def pod_specs() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for _, doc in manifests():
        if doc["kind"] in ("Deployment", "Job"):
            yield doc["kind"], doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def containers(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def env_file_values(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines()
             if line.strip() and not line.startswith("#"))
    return {key: value for key, value in pairs}


def duration_s(text: str) -> int:
    match = re.fullmatch(r"(\d+)s", text)
    assert match, f"expected a duration in seconds like '30s', got {text!r}"
    return int(match.group(1))


@pytest.fixture(scope="module")
def dev_secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/ (without any local secrets) where make-dev-secrets.sh has run."""
    copy = tmp_path_factory.mktemp("stack") / "deploy"
    shutil.copytree(DEPLOY, copy, ignore=lambda folder, names: [
        n for n in names if Path(folder).name == "secrets" and n not in ("README.md",
                                                                         ".gitignore")])
    subprocess.run(["bash", str(copy / "make-dev-secrets.sh")], check=True,
                   capture_output=True, timeout=60)
    return copy / "secrets"


# ------------------------------------------------------------------------------ schemas


def test_compose_file_matches_the_compose_specification() -> None:
    """deploy/docker-compose.yml validates against the Compose specification schema."""
    result = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
         str(COMPOSE_FILE)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_docker_compose_config_accepts_the_stack(dev_secrets: Path) -> None:
    """`docker compose config -q` accepts the stack with generated secrets (needs the plugin)."""
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True,
                                        timeout=30).returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    result = subprocess.run([docker, "compose", "-f", str(dev_secrets.parent /
                                                          "docker-compose.yml"), "config", "-q"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_k8s_manifests_match_the_kubernetes_schemas() -> None:
    """Every Kubernetes object validates strictly against the 1.31 schemas."""
    problems = []
    for name, doc in manifests():
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except (kubernetes_validate.ValidationError,
                kubernetes_validate.SchemaNotFoundError) as exc:
            where = "/".join(str(p) for p in getattr(exc, "absolute_path", []))
            problems.append(f"{name} {doc['kind']}/{doc['metadata']['name']} {where}: "
                            f"{getattr(exc, 'message', exc)}")
    assert len(manifests()) >= 10
    assert not problems, "\n".join(problems)


def test_kustomization_lists_every_manifest_but_the_dev_only_simulator() -> None:
    """`kubectl apply -k` applies every manifest except the dev-only PSP simulator."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == NAMESPACE
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in manifest_files()} - DEV_ONLY_MANIFESTS
    for name in DEV_ONLY_MANIFESTS:
        assert "DEVELOPMENT ONLY" in (K8S / name).read_text()


def test_kustomize_renders_everything_into_the_namespace() -> None:
    """`kubectl kustomize deploy/k8s` renders, with every object in the platform's namespace."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    result = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    rendered = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert len(rendered) == sum(1 for name, _ in manifests() if name not in DEV_ONLY_MANIFESTS)
    for doc in rendered:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]["name"]


def image_name(reference: str) -> str:
    """`registry/path/name:tag` (or a Compose `${VAR:-default}`) -> name."""
    reference = re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", reference)
    return reference.rsplit("/", 1)[-1].split("@")[0].split(":")[0]


def runs_simulator(argv: list[str]) -> bool:
    return "simulate-psp" in shlex.split(" ".join(argv))


def test_only_the_simulator_runs_the_dev_image() -> None:
    """Every Compose service and Kubernetes container that runs `gateway-bridge simulate-psp`
    uses the dev target's image (the production image has no simulator); every other one runs
    the production image; Kubernetes objects using the dev image are dev-only manifests."""
    production_target = list(dockerfile_stages())[-1]
    simulators = 0
    for name, svc in our_services().items():
        if runs_simulator(svc.get("command", [])):
            simulators += 1
            assert svc["build"].get("target") == DEV_TARGET, f"compose {name}: not the dev target"
            assert image_name(svc["image"]) == DEV_IMAGE, f"compose {name}: {svc['image']}"
        else:
            assert svc["build"].get("target", production_target) == production_target, name
            assert image_name(svc["image"]) == PRODUCTION_IMAGE, f"compose {name}: {svc['image']}"
    assert simulators == 1, "expected one Compose service running the simulator"
    simulators = 0
    for file, doc in manifests():
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        for container in containers(doc["spec"]["template"]["spec"]):
            where = f"{file} {doc['kind']}/{doc['metadata']['name']}/{container['name']}"
            image = image_name(container["image"])
            if runs_simulator(container.get("command", [])):
                simulators += 1
                assert image == DEV_IMAGE, f"{where}: {container['image']} has no simulator"
            else:
                assert image == PRODUCTION_IMAGE, f"{where}: {container['image']}"
            if image == DEV_IMAGE:
                assert file in DEV_ONLY_MANIFESTS, f"{where}: the dev image outside dev-only files"
    assert simulators == 1, "expected one Kubernetes container running the simulator"


# ------------------------------------------------------------------------------ the image


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1])
            for line in lines if line and not line.startswith("#")]


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its own instructions, FROM first, in file order: the last is the default
    target (what `docker build` without --target produces)."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for op, arg in dockerfile_instructions():
        if op == "FROM":
            words = arg.split()
            named = len(words) >= 3 and words[-2].upper() == "AS"
            current = stages.setdefault(words[-1] if named else f"#{len(stages)}", [])
        if current is not None:
            current.append((op, arg))
    return stages


def global_args() -> dict[str, str]:
    """The ARGs declared before the first FROM, with their defaults: what FROM lines may use."""
    args: dict[str, str] = {}
    for op, arg in dockerfile_instructions():
        if op == "FROM":
            break
        if op == "ARG":
            name, _, default = arg.partition("=")
            args[name] = default
    return args


def stage_from(stage: str) -> str:
    """The FROM reference of `stage` as written, ARGs unexpanded."""
    return [w for w in dockerfile_stages()[stage][0][1].split() if not w.startswith("--")][0]


def stage_base(stage: str) -> str:
    """What `stage` is built FROM in the default build: another stage's name or an image
    reference, with the ARGs at their defaults."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: global_args()[m.group(1)], stage_from(stage))


def stage_bases(stage: str) -> list[str]:
    """Every stage `stage` can be built FROM, whatever the build args (the default first):
    `FROM install-${X}` may be any stage whose name fits `install-*`."""
    stages = dockerfile_stages()
    literals = re.split(r"\$\{?\w+\}?", stage_from(stage))
    pattern = ".+".join(re.escape(part) for part in literals)
    alternatives = [name for name in stages if "".join(literals) and re.fullmatch(pattern, name)]
    default = stage_base(stage)
    return ([default] if default in stages else []) + [a for a in alternatives if a != default]


def stage_chain(stage: str) -> list[str]:
    """`stage`, the stage it is built FROM, that one's, ... (the image is their layers)."""
    chain = [stage]
    while stage_base(chain[-1]) in dockerfile_stages():
        chain.append(stage_base(chain[-1]))
    return chain


def stage_image(stage: str) -> list[tuple[str, str]]:
    """Every instruction that makes up the image of `stage`, its bases' first."""
    stages = dockerfile_stages()
    return [instruction for name in reversed(stage_chain(stage)) for instruction in stages[name]]


def stage_inputs(stage: str) -> set[str]:
    """Every stage whose files can reach `stage`: its FROM chain (under any build args) and
    COPY --from sources."""
    stages, seen, todo = dockerfile_stages(), set(), [stage]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += stage_bases(name)
        todo += [m for op, arg in stages[name] if op in ("COPY", "ADD")
                 for m in re.findall(r"--from=(\S+)", arg) if m in stages]
    return seen


def copy_sources(arg: str) -> list[str]:
    """The context paths a COPY/ADD reads (flags and the destination dropped)."""
    words = [w for w in shlex.split(arg) if not w.startswith("--")]
    return words[:-1]


def healthcheck_argv(arg: str) -> list[str]:
    """The command of a `HEALTHCHECK ... CMD [...]`, through an `sh -c "exec ..."` wrapper."""
    words = re.findall(r'"([^"]*)"', arg)
    if words[:2] == ["sh", "-c"]:
        words = shlex.split(words[2])
    return words[1:] if words[:1] == ["exec"] else words


def test_dockerfile_is_multi_stage_non_root_with_a_health_check() -> None:
    """The image: builder + slim runtime, venv only, fixed non-root uid, health check, no secrets."""
    instructions = dockerfile_instructions()
    stages = dockerfile_stages()
    assert len(stages) >= 2, "expected a builder and a runtime stage"
    final = stage_image(list(stages)[-1])
    base = dict(arg.split("=", 1) for op, arg in instructions if op == "ARG" and "=" in arg)
    assert base.get("PYTHON_IMAGE", "").startswith("python:3.11-slim")
    users = [arg for op, arg in final if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    health = [healthcheck_argv(arg) for op, arg in final if op == "HEALTHCHECK"]
    assert health and health[-1][:2] == ["wallet-core", "health"], health
    # It asks the port the wallet listens on, wherever a run moves it.
    assert "WALLET_LISTEN_ADDR" in health[-1][health[-1].index("--addr") + 1], health
    assert all("--from=builder" in arg for op, arg in final if op in ("COPY", "ADD"))
    env = " ".join(arg for op, arg in final if op == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "PYTHONUNBUFFERED=1" in env
    for op, arg in instructions:
        if op in ("COPY", "ADD"):
            assert not re.search(r"secrets|\.run\b|\.env\b|\.venv\b", arg), arg
        if op in ("ENV", "ARG"):
            names = re.findall(r"(\w+)=", arg) or [arg.split()[0]]
            assert not any(SECRET_NAME.search(n) for n in names), f"{op} {arg}"
        if op == "RUN" and "pip install" in arg:
            assert "[dev]" not in arg and "-c constraints.txt" in arg, arg


def test_only_the_dev_target_of_the_image_carries_the_psp_simulator() -> None:
    """The default target (production) and every stage it is made from never copy
    psp_simulator, the wheel leaves it out and the build fails if it got in anyway; the dev
    target is that production image plus psp_simulator, importable, checked at build time."""
    stages = dockerfile_stages()
    production = list(stages)[-1]
    assert DEV_TARGET in stages, f"deploy/Dockerfile has no {DEV_TARGET!r} stage"
    assert production != DEV_TARGET, "the last stage (the default target) must be production"
    inputs = stage_inputs(production)
    assert DEV_TARGET not in inputs, f"{production} is built from the dev target"
    for name in inputs:
        for op, arg in stages[name]:
            if op in ("COPY", "ADD"):
                for source in copy_sources(arg):
                    assert SIMULATOR_PACKAGE not in source, f"{name}: {op} {arg}"
                    # The whole context would bring psp_simulator along.
                    assert source.strip("./*") != "", f"{name}: {op} {arg} copies everything"
            if op == "ENV":
                assert SIMULATOR_PACKAGE not in arg and "PYTHONPATH" not in arg, f"{name}: {arg}"
    guard = rf"find_spec\('{SIMULATOR_PACKAGE}'\) is not None"
    assert any(op == "RUN" and re.search(guard, arg) for name in inputs
               for op, arg in stages[name]), "no build-time check that psp_simulator is absent"
    # The builder pip-installs the project's wheel: psp_simulator must not be one of its packages.
    hatch = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]
    wheel = hatch["targets"]["wheel"]
    assert SIMULATOR_PACKAGE not in wheel["packages"] and "gateway_bridge" in wheel["packages"]
    assert not any(SIMULATOR_PACKAGE in f"{k} {v}" for k, v in
                   wheel.get("force-include", {}).items())

    # dev = the production image (built FROM a stage of its chain) + the simulator's source.
    dev_chain = stage_chain(DEV_TARGET)
    assert dev_chain[1:2] and dev_chain[1] in stage_chain(production), dev_chain
    dev_image = stage_image(DEV_TARGET)
    users = [arg for op, arg in dev_image if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    destinations = [shlex.split(arg)[-1].rstrip("/") for op, arg in stages[DEV_TARGET]
                    if op == "COPY" and any(src.rstrip("/") == SIMULATOR_PACKAGE
                                            for src in copy_sources(arg))]
    assert len(destinations) == 1, "the dev target must copy psp_simulator/ once"
    destination = Path(destinations[0])
    assert destination.name == SIMULATOR_PACKAGE, destination
    python_path = [entry for op, arg in dev_image if op == "ENV"
                   for entry in re.findall(r"PYTHONPATH[= ](\S+)", arg)]
    assert python_path and str(destination.parent) in python_path[-1].split(":"), python_path
    assert any(op == "RUN" and re.search(rf"import {SIMULATOR_PACKAGE}\b", arg)
               for op, arg in stages[DEV_TARGET]), "the dev target never imports psp_simulator"


def test_the_offline_build_installs_only_wheels_made_on_the_host() -> None:
    """INSTALL_FROM=wheels (scripts/image-check.sh) switches the builder's install to the wheels
    built on the host, with no index; the default stays the install from source on the
    official image. Either install starts from a venv made on the runtime's own base, so the
    interpreter the venv records is the one the image runs."""
    stages = dockerfile_stages()
    assert global_args().get("INSTALL_FROM") == "source"
    installs = stage_bases("builder")
    assert installs == ["install-source", "install-wheels"], installs
    offline = stages["install-wheels"]
    pips = [arg for op, arg in offline if op == "RUN" and "pip install" in arg]
    assert pips and all("--no-index" in arg and "--find-links" in arg for arg in pips), pips
    copied = sorted(source.rstrip("/") for op, arg in offline if op in ("COPY", "ADD")
                    for source in copy_sources(arg))
    assert copied == ["constraints.txt", OFFLINE_WHEELS], copied
    runtime_root = stage_chain(list(stages)[-1])[-1]
    for install in installs:
        assert stage_from(stage_chain(install)[-1]) == stage_from(runtime_root), install
    # The wheels must reach the build context, and never git.
    ignored = [line.strip().rstrip("/") for line in
               (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith(("#", "!"))]
    assert not any(OFFLINE_WHEELS == p or OFFLINE_WHEELS.startswith(p + "/") for p in ignored)
    assert "wheels/" in (DEPLOY / "offline" / ".gitignore").read_text().splitlines()


def test_dockerignore_keeps_local_state_and_secrets_out_of_the_build() -> None:
    """The build context excludes .git, the venv, local runs, deploy secrets and logs."""
    patterns = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    for required in (".git", ".venv", ".run", "deploy/secrets", "**/__pycache__", "*.log",
                     ".pytest_cache", ".hypothesis", "gen"):
        assert required in patterns, f".dockerignore lacks {required}"


def test_every_command_the_deployment_runs_exists() -> None:
    """Each `wallet-core X` / `gateway-bridge X` in the image, Compose and Kubernetes is real."""
    commands: set[tuple[str, str]] = set()

    def note(argv: list[str]) -> None:
        words = shlex.split(" ".join(argv))
        for i, word in enumerate(words[:-1]):
            if word in ("wallet-core", "gateway-bridge"):
                commands.add((word, words[i + 1]))

    for op, arg in dockerfile_instructions():
        if op in ("CMD", "HEALTHCHECK"):
            note([w for w in re.findall(r'"([^"]*)"', arg)])
    for svc in compose()["services"].values():
        note(svc.get("command", []))
        note(svc.get("healthcheck", {}).get("test", []))
    for _, _, spec in pod_specs():
        for container in containers(spec):
            note(container.get("command", []))
    assert ("wallet-core", "health") in commands and ("gateway-bridge", "migrate") in commands
    for script, sub in sorted(commands):
        result = subprocess.run([str(BIN / script), sub, "--help"], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, f"{script} {sub}: {result.stderr}"


# ------------------------------------------------------------------------------ Kubernetes


def test_every_k8s_container_is_bounded_probed_and_locked_down() -> None:
    """Requests+limits everywhere, probes on long-running containers, non-root, read-only, no caps."""
    for kind, name, spec in pod_specs():
        pod_security = spec.get("securityContext", {})
        assert spec.get("automountServiceAccountToken") is False, name
        for container in containers(spec):
            where = f"{kind}/{name}/{container['name']}"
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][part]), where
            security = container["securityContext"]
            assert security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            if kind == "Deployment":
                assert "readinessProbe" in container and "livenessProbe" in container, where


def test_wallet_is_reached_through_a_headless_service_with_grpc_probes() -> None:
    """Headless wallet Service (client-side gRPC balancing); native gRPC probes on 50051."""
    services = of_kind("Service")
    assert services["wallet"]["spec"]["clusterIP"] == "None"
    assert services["bridge"]["spec"].get("type", "ClusterIP") == "ClusterIP"
    wallet = of_kind("Deployment")["wallet"]
    container = wallet["spec"]["template"]["spec"]["containers"][0]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == 50051, probe
    bridge = of_kind("Deployment")["bridge"]["spec"]["template"]["spec"]["containers"][0]
    assert bridge["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_rollouts_keep_capacity_and_pods_spread() -> None:
    """Wallet 3 and bridge 2 replicas, rolling with maxUnavailable 0, spread over nodes."""
    deployments = of_kind("Deployment")
    for name, replicas in (("wallet", 3), ("bridge", 2)):
        spec = deployments[name]["spec"]
        assert spec["replicas"] == replicas, name
        assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, name
        keys = {c["topologyKey"] for c in spec["template"]["spec"]["topologySpreadConstraints"]}
        assert "kubernetes.io/hostname" in keys, name


def test_every_deployment_has_a_disruption_budget_selecting_it() -> None:
    """Each Deployment's pods are selected by a PodDisruptionBudget."""
    budgets = of_kind("PodDisruptionBudget").values()
    for name, deployment in of_kind("Deployment").items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert any(budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
                   for budget in budgets), f"no PodDisruptionBudget selects {name}"


def test_termination_budgets_cover_the_services_shutdown_grace() -> None:
    """Pods and Compose give preStop + *_SHUTDOWN_GRACE_MS + margin before SIGKILL."""
    config = {name: cm["data"] for name, cm in of_kind("ConfigMap").items()}
    deployments = of_kind("Deployment")
    for name, config_map, grace_var in (("wallet", "wallet-config", "WALLET_SHUTDOWN_GRACE_MS"),
                                        ("bridge", "bridge-config", "BRIDGE_SHUTDOWN_GRACE_MS")):
        spec = deployments[name]["spec"]["template"]["spec"]
        grace_s = int(config[config_map][grace_var]) / 1000
        pre_stop_s = spec["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
        budget = spec["terminationGracePeriodSeconds"]
        assert budget >= pre_stop_s + grace_s + SHUTDOWN_MARGIN_S, name
        service = compose()["services"][name]
        compose_grace_s = int(service["environment"][grace_var]) / 1000
        assert duration_s(service["stop_grace_period"]) >= compose_grace_s + SHUTDOWN_MARGIN_S


def test_pods_announce_their_metrics_port_to_prometheus() -> None:
    """prometheus.io annotations name the port the ConfigMap's *_METRICS_ADDR listens on."""
    config = {name: cm["data"] for name, cm in of_kind("ConfigMap").items()}
    for name, addr in (("wallet", config["wallet-config"]["WALLET_METRICS_ADDR"]),
                       ("bridge", config["bridge-config"]["BRIDGE_METRICS_ADDR"])):
        template = of_kind("Deployment")[name]["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == addr.rsplit(":", 1)[1]
        ports = {p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
        assert int(annotations["prometheus.io/port"]) in ports


def test_no_manifest_carries_a_real_looking_secret() -> None:
    """Secrets only as REPLACE_ME placeholders; secret settings only through Secret references."""
    for name, doc in manifests():
        if doc["kind"] == "Secret":
            values = {**doc.get("data", {}), **doc.get("stringData", {})}
            assert all("REPLACE_ME" in str(v) for v in values.values()), name
        else:
            assert not SECRET_VALUE.search(yaml.safe_dump(doc)), name
        if doc["kind"] == "ConfigMap":
            for key in doc["data"]:
                assert not SECRET_NAME.search(key) or key.endswith("_FILE"), f"{name}: {key}"
    for _, name, spec in pod_specs():
        for container in containers(spec):
            for var in container.get("env", []):
                if SECRET_NAME.search(var["name"]):
                    assert "secretKeyRef" in var.get("valueFrom", {}), f"{name}: {var['name']}"


def referenced_secret_keys() -> dict[str, set[str]]:
    """Secret name -> keys the pods use (whole-volume mounts use the keys of the dev secrets)."""
    refs: dict[str, set[str]] = {}
    for _, _, spec in pod_specs():
        for container in containers(spec):
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.setdefault(ref["name"], set()).add(ref["key"])
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                refs.setdefault(volume["secret"]["secretName"], set())
    return refs


def test_every_referenced_secret_has_a_documented_create_command() -> None:
    """deploy/k8s/README.md creates each Secret the pods reference, with each key they read."""
    readme = (K8S / "README.md").read_text()
    commands = {m.group(1): m.group(0) for m in re.finditer(
        r"create secret generic ([\w-]+)((?:\s*\\\n\s*--from-file=[^\n\\]+)+)", readme)}
    for secret, keys in referenced_secret_keys().items():
        assert secret in commands, f"no `kubectl create secret generic {secret}` in README"
        for key in keys:
            assert f"--from-file={key}=" in commands[secret], f"{secret} lacks {key}"


# ------------------------------------------------------------------------------ Compose


def test_compose_runs_two_wallet_replicas_without_a_published_port() -> None:
    """Two wallet replicas; no host port (two replicas cannot bind one); no fixed name."""
    wallet = compose()["services"]["wallet"]
    assert wallet["deploy"]["replicas"] == 2
    assert "ports" not in wallet and "container_name" not in wallet
    assert wallet["environment"]["WALLET_LISTEN_ADDR"].startswith("0.0.0.0:")


def test_compose_passes_no_secret_as_an_environment_literal() -> None:
    """Secret settings only via *_FILE + Compose secrets or git-ignored env files."""
    declared = compose()["secrets"]
    for name, svc in compose()["services"].items():
        environment = svc.get("environment", {})
        assert isinstance(environment, dict), f"{name}: use the mapping form"
        for key, value in environment.items():
            if SECRET_NAME.search(key) and not key.endswith("_FILE"):
                raise AssertionError(f"{name}: {key} is a literal; use {key}_FILE or env_file")
            assert not SECRET_VALUE.search(str(value)), f"{name}: {key}"
            if key.endswith("_FILE") and str(value).startswith("/run/secrets/"):
                secret = str(value).removeprefix("/run/secrets/")
                assert secret in svc.get("secrets", []), f"{name}: {secret} not mounted"
        for path in svc.get("env_file", []):
            assert path.startswith("secrets/"), f"{name}: env_file {path} outside secrets/"
    ignored = [f"deploy/{entry['file'].removeprefix('./')}" for entry in declared.values()]
    ignored += [f"deploy/{p}" for svc in our_services().values() for p in svc["env_file"]]
    result = subprocess.run(["git", "check-ignore", "--no-index", *ignored], cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    assert set(result.stdout.split()) == set(ignored), "secret files git would not ignore"


def test_compose_starts_services_only_when_their_dependencies_are_ready() -> None:
    """depends_on waits for health checks and for the migrations to complete."""
    services = compose()["services"]
    for name in ("wallet", "bridge"):
        assert services[name]["depends_on"]["migrate"]["condition"] == \
            "service_completed_successfully", name
    for name, svc in services.items():
        for target, spec in svc.get("depends_on", {}).items():
            condition = spec["condition"]
            assert condition in ("service_healthy", "service_completed_successfully"), name
            if condition == "service_healthy":
                check = services[target].get("healthcheck", {})
                assert check.get("test") and not check.get("disable"), f"{target} has no check"
    for name, svc in services.items():
        test = svc.get("healthcheck", {}).get("test", [])
        if test[1:3] == ["python", "-c"]:
            compile(test[3], f"{name} healthcheck", "exec")


def test_dev_secrets_script_writes_every_secret_compose_reads(dev_secrets: Path) -> None:
    """make-dev-secrets.sh writes each file, consistent, private, and keeps them on a rerun."""
    files = [entry["file"].removeprefix("./secrets/") for entry in compose()["secrets"].values()]
    files += [p.removeprefix("secrets/") for svc in our_services().values()
              for p in svc["env_file"]]
    for name in files:
        path = dev_secrets / name
        assert path.is_file(), f"make-dev-secrets.sh did not write {name}"
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o600 if name.endswith(".env") else 0o644), f"{name}: {oct(mode)}"
    assert stat.S_IMODE(dev_secrets.stat().st_mode) == 0o700
    callers = json.loads((dev_secrets / "wallet_callers.json").read_text())
    assert (dev_secrets / "bridge_wallet_token").read_text() == \
        callers["payments-service"]["token"]
    simulator = env_file_values(dev_secrets / "simulator.env")
    assert simulator["BRIDGE_STRIPE_WEBHOOK_SECRET"] == \
        (dev_secrets / "stripe_webhook_secret").read_text()
    before = {p.name: p.read_bytes() for p in dev_secrets.iterdir()}
    subprocess.run(["bash", str(dev_secrets.parent / "make-dev-secrets.sh")], check=True,
                   capture_output=True, timeout=60)
    assert {p.name: p.read_bytes() for p in dev_secrets.iterdir()} == before


# ------------------------------------------------------------------------------ drift


def settings_loader(argv: list[str]) -> Callable[[Mapping[str, str]], object] | None:
    """The settings loader the process started by argv runs first (None: no settings)."""
    from gateway_bridge import config as bridge_config
    from psp_simulator import config as simulator_config
    from wallet_core import config as wallet_config

    loaders: dict[tuple[str, ...], Callable[[Mapping[str, str]], object]] = {
        ("wallet-core", "serve"): wallet_config.load,
        ("gateway-bridge", "serve"): bridge_config.load,
        ("gateway-bridge", "simulate-psp"): simulator_config.load,
    }
    return loaders.get(tuple(argv[:2]))


def test_compose_environment_is_accepted_by_each_services_settings(dev_secrets: Path) -> None:
    """Each Compose process's environment + mounted secrets passes its own settings loader."""
    secret_files = {name: dev_secrets / entry["file"].removeprefix("./secrets/")
                    for name, entry in compose()["secrets"].items()}
    loaded = 0
    for name, svc in our_services().items():
        env: dict[str, str] = {}
        for path in svc["env_file"]:
            env.update(env_file_values(dev_secrets / path.removeprefix("secrets/")))
        for key, value in svc.get("environment", {}).items():
            value = str(value)
            if value.startswith("/run/secrets/"):
                value = str(secret_files[value.removeprefix("/run/secrets/")])
            env[key] = value
        loader = settings_loader(svc["command"])
        if loader is None:  # the migrate shell: both CLIs read DATABASE_URL only
            assert env["DATABASE_URL"].startswith("postgresql://"), name
            continue
        loader(env)  # raises SettingsError listing every problem
        loaded += 1
    assert loaded == 3


def test_k8s_environment_is_accepted_by_each_services_settings(dev_secrets: Path) -> None:
    """Each Deployment's ConfigMap + Secret references + mounted files passes its loader."""
    config = {name: cm["data"] for name, cm in of_kind("ConfigMap").items()}
    fake_urls = {"database-url": "postgresql://wallet:pw@postgres:5432/wallet",
                 "redis-url": "redis://redis:6379/0"}
    for name, deployment in of_kind("Deployment").items():
        spec = deployment["spec"]["template"]["spec"]
        container = spec["containers"][0]
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            env.update(config[source["configMapRef"]["name"]])
        for var in container.get("env", []):
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref is None:
                env[var["name"]] = var["value"]
            else:
                env[var["name"]] = fake_urls.get(ref["key"]) or \
                    (dev_secrets / ref["key"]).read_text()
        # Files under a mounted Secret are the dev secret of the same key name.
        mounts = [m["mountPath"] for m in container.get("volumeMounts", [])]
        for key, value in env.items():
            for mount in mounts:
                if key.endswith("_FILE") and value.startswith(mount + "/"):
                    env[key] = str(dev_secrets / value.removeprefix(mount + "/"))
        loader = settings_loader(container["command"])
        assert loader is not None, name
        loader(env)


def test_prometheus_scrapes_every_wallet_replica_and_the_bridge() -> None:
    """DNS discovery on the Compose service names, at the ports the services expose metrics on."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    services = compose()["services"]
    for job, var in (("wallet", "WALLET_METRICS_ADDR"), ("bridge", "BRIDGE_METRICS_ADDR")):
        discovery = jobs[job]["dns_sd_configs"][0]
        assert discovery["names"] == [job] and discovery["type"] == "A"
        assert str(discovery["port"]) == services[job]["environment"][var].rsplit(":", 1)[1]


def defined_metric_samples() -> set[str]:
    """Sample names the wallet and the bridge can expose (counters: _total, histograms: ...)."""
    import prometheus_client

    for module in ("wallet_core.metrics", "gateway_bridge.metrics"):
        importlib.import_module(module)  # defining the metrics registers them
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                "gauge": ("",)}
    return {family.name + suffix for family in prometheus_client.REGISTRY.collect()
            for suffix in suffixes.get(family.type, ("",))}


def test_grafana_dashboard_queries_only_metrics_the_services_define() -> None:
    """Every dashboard query names real metrics, uses the provisioned data source, covers all."""
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "wallet.json").read_text())
    source = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" /
                             "prometheus.yml").read_text())["datasources"][0]
    known = defined_metric_samples()
    used: set[str] = set()
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        for target in panel["targets"]:
            names = set(re.findall(r"\b(?:wallet|bridge)_[a-z_]+\b", target["expr"]))
            assert names <= known, f"{panel['title']}: unknown {names - known}"
            used |= names
    for wanted in ("wallet_rpc_requests_total", "wallet_rpc_duration_seconds_bucket",
                   "wallet_group_commit_batch_size_bucket", "wallet_replays_total",
                   "bridge_http_requests_total", "bridge_http_request_duration_seconds_bucket",
                   "bridge_webhooks_total", "bridge_routing_outcomes_total",
                   "bridge_routing_attempts_total"):
        assert wanted in used, f"the dashboard does not show {wanted}"
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" /
                               "dashboards.yml").read_text())["providers"][0]
    mounts = compose()["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts


def test_alert_rules_watch_real_metrics_and_every_problem() -> None:
    """deploy/prometheus/alerts.yml parses, is loaded by Prometheus (rule_files and the
    Compose mount), names only metrics the services define, and covers each problem support
    watches: failed deposits, delayed withdrawals, callback errors, currency mismatch,
    timeouts, gateway downtime."""
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    known = defined_metric_samples()
    alerts = {}
    for group in rules["groups"]:
        for rule in group["rules"]:
            names = set(re.findall(r"\b(?:wallet|bridge)_[a-z_]+\b", rule["expr"]))
            assert names and names <= known, f"{rule['alert']}: unknown {names - known}"
            assert rule["labels"]["severity"] in ("page", "ticket")
            assert rule["annotations"]["summary"]
            alerts[rule["alert"]] = rule["expr"]
    for wanted in ("DepositFailureRatioHigh", "WithdrawalsWaiting", "WebhookRejections",
                   "PaymentMismatch", "PaymentsTimedOut", "PspCircuitOpen", "PspCallsFailing",
                   "IncidentOpened", "IncidentNotAcknowledged"):
        assert wanted in alerts
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    mounts = compose()["services"]["prometheus"]["volumes"]
    assert "./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts
