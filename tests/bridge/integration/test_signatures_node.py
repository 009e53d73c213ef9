"""NOWPayments' canonical form against their own JavaScript, run by node (a process, so not a
unit test): the bytes we sign are the bytes NOWPayments signs."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from gateway_bridge.psp import nowpayments
from tests.bridge.unit.test_signatures import IPN


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_nowpayments_canonical_form_matches_node() -> None:
    """NOWPayments' own Node snippet (sortObject + JSON.stringify) writes the same bytes."""
    # NOWPayments' snippet, with arrays kept as arrays (their Python and PHP samples do
    # that; IPNs carry no arrays anyway) and objects inside arrays sorted too.
    script = ("const sortObject = o => Array.isArray(o) ? o.map(v => (v && typeof v === "
              "'object') ? sortObject(v) : v) : Object.keys(o).sort().reduce((r, k) => "
              "{ r[k] = (o[k] && typeof o[k] === 'object') ? sortObject(o[k]) : o[k]; "
              "return r; }, {});"
              "let d=''; process.stdin.on('data', c => d += c); process.stdin.on('end', () =>"
              " process.stdout.write(JSON.stringify(sortObject(JSON.parse(d)))));")
    bodies = [IPN, b'{"b":[3,1.10,{"z":1,"a":"\\u00e9\\n/"}],"a":1e21,"c":123456789.125,'
                   b'"d":-0.000001,"e":2.5e-7,"f":100.000,"g":1.5e16,"h":"\\u2028"}']
    for body in bodies:
        node = subprocess.run(["node", "-e", script], input=body, capture_output=True,
                              check=True, timeout=30)
        assert nowpayments.canonical(body) == node.stdout
