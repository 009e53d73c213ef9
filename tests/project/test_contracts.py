"""The gRPC contract held still: no breaking change to the released proto, a clean lint, and
an API reference (docs/API.md) that says what the proto says.

`buf breaking` compares protos/ with the last release's image (protos/baseline/, made by
scripts/proto-release.sh) under the rules of buf.yaml; scratch copies with a field
renumbered, removed or retyped prove it fails and names the field. buf comes from the dev
dependencies (pip package buf-bin, in .venv/bin); without it these tests skip. It must need
no network: buf.yaml has no remote dependencies, and every run here goes through a proxy
that does not exist, so a fetch would fail the test instead of passing on a connected
machine only.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "protos" / "baseline" / "wallet-v1.binpb"
BASELINE_NOTE = ROOT / "protos" / "baseline" / "README.md"
WALLET_PROTO = Path("protos") / "wallet" / "v1" / "wallet_service.proto"
API_PAGE = ROOT / "docs" / "API.md"
# buf lints or compares this proto in well under a second; this bounds a hang.
BUF_TIMEOUT_S = 60
# buf's exit code when it ran and found breaking changes (1 is "could not run").
BUF_EXIT_FINDINGS = 100
# Where a network fetch would go: nothing listens on the discard port of loopback.
DEAD_PROXY = "http://127.0.0.1:9"


def _buf_binary() -> Path | None:
    for candidate in (Path(sys.executable).parent / "buf", ROOT / ".venv" / "bin" / "buf"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


# Not a skip when missing: the contract checks would then pass unseen. buf is a pinned dev
# dependency (pip package buf-bin), and `make test` runs scripts/buf.sh first.
BUF = _buf_binary()


def _buf(*args: str, cwd: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    """Run buf offline: its cache in `cache`, and any HTTP(S) request sent to a dead proxy."""
    assert BUF is not None, "buf is not installed (pip package buf-bin): run scripts/bootstrap.sh"
    env = {**os.environ, "BUF_CACHE_DIR": str(cache), "HTTPS_PROXY": DEAD_PROXY,
           "HTTP_PROXY": DEAD_PROXY, "https_proxy": DEAD_PROXY, "http_proxy": DEAD_PROXY,
           "NO_PROXY": "", "no_proxy": ""}
    return subprocess.run([str(BUF), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=BUF_TIMEOUT_S)


def _breaking(workspace: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    return _buf("breaking", "protos", "--against", str(BASELINE), "--error-format", "json",
                cwd=workspace, cache=cache)


def _findings(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


# --- buf.yaml and the baseline -------------------------------------------------------------


def test_buf_config_has_no_remote_dependencies() -> None:
    """buf.yaml names no BSR modules (`deps`) and there is no buf.lock: buf lint and buf
    breaking run with no network, as `make test` must."""
    config = yaml.safe_load((ROOT / "buf.yaml").read_text())
    assert config["version"] == "v2"
    assert not config.get("deps"), f"remote dependencies in buf.yaml: {config['deps']}"
    assert all(not module.get("deps") for module in config.get("modules", []))
    assert not (ROOT / "buf.lock").exists(), "buf.lock pins remote dependencies"


def test_the_baseline_is_a_released_wallet_contract() -> None:
    """The baseline is a buf image holding wallet/v1/wallet_service.proto with its service
    (an empty or wrong image would let every change pass), and its note names the release."""
    image = descriptor_pb2.FileDescriptorSet.FromString(BASELINE.read_bytes())
    files = {f.name: f for f in image.file}
    wallet = files.get("wallet/v1/wallet_service.proto")
    assert wallet is not None, f"baseline holds {sorted(files)}"
    assert [s.name for s in wallet.service] == ["WalletService"]
    assert len(wallet.service[0].method) >= 20 and len(wallet.message_type) >= 40
    first_line = BASELINE_NOTE.read_text().splitlines()[0]
    assert re.search(r"API version \d+\.\d+\.\d+\.$", first_line), first_line


# --- buf on the real protos ----------------------------------------------------------------


def test_protos_do_not_break_the_released_contract(tmp_path: Path) -> None:
    """`buf breaking protos --against protos/baseline/wallet-v1.binpb` (buf.yaml's FILE
    rules) finds nothing: every released field, number, type and RPC is still there."""
    proc = _breaking(ROOT, tmp_path)
    assert proc.returncode == 0, (
        "protos/ breaks the released contract (protos/baseline/README.md says which "
        f"release):\n{proc.stdout}{proc.stderr}\nA released field keeps its number, name and "
        "type; a breaking change needs a new package (wallet.v2).")


def test_buf_lint_passes(tmp_path: Path) -> None:
    """`buf lint` (buf.yaml: STANDARD) finds nothing in protos/."""
    proc = _buf("lint", cwd=ROOT, cache=tmp_path)
    assert proc.returncode == 0, f"buf lint:\n{proc.stdout}{proc.stderr}"


# --- buf breaking catches a break: scratch copies with one change --------------------------


def _edit(proto: str, message: str, old: str, new: str) -> str:
    """`proto` with `old` replaced by `new` inside `message`'s block, where it occurs once."""
    block = re.search(rf"^message {message} \{{\n.*?^\}}", proto, re.MULTILINE | re.DOTALL)
    assert block is not None, f"no message {message} in the proto"
    assert block.group().count(old) == 1, f"{old!r} is not once in message {message}"
    start, end = block.span()
    return proto[:start] + block.group().replace(old, new) + proto[end:]


# (message, old line, new line, the rule buf must name, the field it must name)
CHANGES = {
    "field renumbered": ("BetRequest", "  int64 amount = 3;\n", "  int64 amount = 30;\n",
                         "FIELD_NO_DELETE", "amount"),
    "field removed": ("DepositRequest", "  string psp_reference = 5;\n", "",
                      "FIELD_NO_DELETE", "psp_reference"),
    "field type changed": ("ChargebackRequest", "  int64 amount = 3;\n", "  int32 amount = 3;\n",
                           "FIELD_SAME_TYPE", "amount"),
}


def _scratch_workspace(tmp_path: Path) -> Path:
    """A copy of buf.yaml and protos/ to break on purpose."""
    workspace = tmp_path / "workspace"
    shutil.copytree(ROOT / "protos", workspace / "protos")
    shutil.copy2(ROOT / "buf.yaml", workspace / "buf.yaml")
    return workspace


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_buf_breaking_fails_on_a_broken_copy_and_names_the_field(tmp_path: Path,
                                                                 change: str) -> None:
    """A scratch copy of protos/ with one released field renumbered, removed or retyped
    fails `buf breaking` with the rule and the field (and its message) named."""
    message, old, new, rule, field = CHANGES[change]
    workspace = _scratch_workspace(tmp_path)
    proto = workspace / WALLET_PROTO
    proto.write_text(_edit(proto.read_text(), message, old, new))
    proc = _breaking(workspace, tmp_path / "cache")
    assert proc.returncode == BUF_EXIT_FINDINGS, (proc.returncode, proc.stdout, proc.stderr)
    findings = _findings(proc.stdout)
    named = [f for f in findings if f["type"] == rule and f'name "{field}"' in f["message"]
             and f'message "{message}"' in f["message"]]
    assert named, f"no {rule} finding naming {message}.{field}: {findings}"
    assert all(f["path"] == WALLET_PROTO.as_posix() for f in findings), findings


def test_buf_breaking_passes_an_additive_change_in_a_copy(tmp_path: Path) -> None:
    """The same scratch copy with a new field and a reworded comment passes: the failures
    above come from the break, not from how the copy is made."""
    workspace = _scratch_workspace(tmp_path)
    proto = workspace / WALLET_PROTO
    text = _edit(proto.read_text(), "BetRequest", "  string idempotency_key = 6;\n",
                 "  string idempotency_key = 6;\n  // Added after 1.0.0.\n"
                 "  string session_id = 7;\n")
    proto.write_text(text.replace("// Bet debits a stake,", "// Bet takes a stake,", 1))
    proc = _breaking(workspace, tmp_path / "cache")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)


# --- docs/API.md ------------------------------------------------------------------------------


def _api_docs() -> ModuleType:
    """scripts/api_docs.py, which is a script, not a package module."""
    spec = importlib.util.spec_from_file_location("api_docs", ROOT / "scripts" / "api_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_api_reference_is_fresh() -> None:
    """docs/API.md is exactly what scripts/api_docs.py makes from protos/ now."""
    api_docs = _api_docs()
    assert API_PAGE.read_text() == api_docs.render(), (
        f"docs/API.md is stale: run `{api_docs.REFRESH}` and commit it")


def test_the_api_reference_covers_the_contract() -> None:
    """Every RPC, message and enum of wallet.v1 has a section, and the proto's comments are
    in it: the file header (errors), an RPC's, a field's and an enum value's."""
    from wallet.v1 import wallet_service_pb2 as pb

    page = API_PAGE.read_text()
    headings = set(re.findall(r"^#{2,3} (\S+)$", page, re.MULTILINE))
    service = pb.DESCRIPTOR.services_by_name["WalletService"]
    expected = {service.name, *service.methods_by_name, *pb.DESCRIPTOR.message_types_by_name,
                *pb.DESCRIPTOR.enum_types_by_name}
    assert expected <= headings, f"no section for {sorted(expected - headings)}"
    for text in ("whose `reason` is stable, e.g.\nINSUFFICIENT_FUNDS",
                 "Bet debits a stake, cash first and then bonus, and reports the split.",
                 "| `replay` | 3 | `bool` | True when this answer is the recorded outcome",
                 "| `ROLLBACK_OUTCOME_BET_NOT_FOUND` | 3 | No such bet"):
        assert text in page, f"docs/API.md lacks {text!r}"
