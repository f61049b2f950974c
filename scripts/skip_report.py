#!/usr/bin/env python3
"""Lists the tests a ctest run skipped, with their reasons, and fails on a reason that
tests/skip-allowlist.txt does not allow.

    skip_report.py <ctest --output-junit file> [<allowlist>]

Reasons come from each test's output: gtest's "<file>:<line>: Skipped" block (the message up to
its "[  SKIPPED ]" line), or, for a test ctest skipped otherwise (an example's exit 77), the
first line that says "precondition: ...". A skip with no reason at all is not allowed.
Exit status: 0 when every skip is allowed, 1 when one is not, 2 on bad input.
"""
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

GTEST_SKIP = re.compile(r"^[^\n]*: Skipped\n(.*?)\n?\[  SKIPPED \] (\S+)", re.M | re.S)
PRECONDITION = re.compile(r"(precondition: [^\n]*)")


def load_allowlist(path):
    patterns = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            patterns.append(re.compile(line))
        except re.error as error:
            sys.exit(f"{path}:{number}: bad regular expression {line!r}: {error}")
    return patterns


def skips(junit):
    """(test name, reason) for every skip in the run."""
    root = ET.parse(junit).getroot()
    for case in root.iter("testcase"):
        name = case.get("name", "?")
        output = case.findtext("system-out") or ""
        skipped = case.find("skipped") is not None
        found = False
        for message, gtest_name in GTEST_SKIP.findall(output):
            found = True
            lines = [l.strip() for l in message.splitlines() if l.strip()]
            label = name if gtest_name in name else f"{name} ({gtest_name})"
            yield label, lines[0] if lines else ""
        if skipped and not found:
            match = PRECONDITION.search(output)
            yield name, match.group(1).strip() if match else ""


def main():
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    junit = Path(sys.argv[1])
    allowlist = sys.argv[2] if len(sys.argv) == 3 else Path(__file__).resolve().parent.parent / "tests/skip-allowlist.txt"
    if not junit.exists():
        print(f"skip report: {junit} does not exist (did ctest run?)", file=sys.stderr)
        return 2
    patterns = load_allowlist(allowlist)
    found = sorted(set(skips(junit)))
    refused = [(n, r) for n, r in found if not any(p.search(r) for p in patterns)]
    print(f"=== skipped tests: {len(found)}")
    for name, reason in found:
        print(f"  {name}: {reason or '(no reason given)'}")
    if refused:
        print(f"=== {len(refused)} skipped for a reason {allowlist} does not allow (a skip must name a "
              "missing precondition; a failed set-up is a failure):")
        for name, reason in refused:
            print(f"  {name}: {reason or '(no reason given)'}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
