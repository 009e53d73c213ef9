"""Judge a pip-audit JSON report (scripts/audit.sh): print what was found, exit with the verdict.

    0  no known vulnerability in the audited dependencies, or the vulnerability database
       was not reachable (nothing could be looked up: said so plainly, not as "clean")
    1  at least one pinned dependency has a known vulnerability
    2  the report is unusable although the database answered (a bug to look at)

pip-audit's own exit code cannot tell these apart: without network it reports every
dependency as "not found" and still says "No known vulnerabilities found".
"""

from __future__ import annotations

import json
import sys

UNREACHABLE_HINTS = ("ConnectionError", "Name or service not known", "Failed to resolve",
                     "Max retries exceeded", "timed out", "Temporary failure in name resolution",
                     "Network is unreachable")


def verdict(report_text: str, stderr_text: str) -> tuple[int, list[str]]:
    try:
        report = json.loads(report_text)
        dependencies = report["dependencies"]
    except (ValueError, KeyError, TypeError):
        if any(hint in stderr_text for hint in UNREACHABLE_HINTS):
            return 0, ["audit: vulnerability database unreachable (no network?); skipped"]
        return 2, ["audit: pip-audit gave no usable report:", stderr_text.strip()[-2000:]]
    skipped = [d for d in dependencies if d.get("skip_reason")]
    vulnerable = [d for d in dependencies if d.get("vulns")]
    lines = [f"{d['name']}=={d['version']}: {v['id']} (fixed in "
             f"{', '.join(v.get('fix_versions') or ['no release yet'])})"
             for d in vulnerable for v in d["vulns"]]
    audited = len(dependencies) - len(skipped)
    if dependencies and not audited:
        return 0, [f"audit: vulnerability database unreachable: none of {len(dependencies)} "
                   "pinned dependencies could be looked up; skipped (not a clean result)"]
    lines += [f"audit: not looked up: {d['name']}" for d in skipped]
    if vulnerable:
        return 1, [*lines, f"audit: {len(lines) - len(skipped)} known vulnerabilities in "
                            f"{len(vulnerable)} of {audited} audited dependencies"]
    return 0, [*lines, f"audit: no known vulnerabilities in {audited} audited dependencies"]


def main() -> int:
    report_path, stderr_path = sys.argv[1], sys.argv[2]
    with open(report_path) as report, open(stderr_path) as stderr:
        code, lines = verdict(report.read(), stderr.read())
    print("\n".join(lines))
    return code


if __name__ == "__main__":
    sys.exit(main())
