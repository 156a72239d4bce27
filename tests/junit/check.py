"""Validates drvisor ci's JUnit XML against the JUnit XSD, reads it back with junitparser (a
real consumer, from PyPI) and checks that every count agrees with the JSON report of the same
run.

    python check.py JUNIT.xml REPORT.json JUNIT.xsd
"""
import json
import sys

import xmlschema
from junitparser import Error, Failure, JUnitXml, Skipped


def main(junit_path, json_path, xsd_path):
    errors = list(xmlschema.XMLSchema(xsd_path).iter_errors(junit_path))
    for e in errors[:5]:
        print("junit: not valid against the XSD: " + str(e).splitlines()[0])
    if errors:
        return 1
    print(f"junit: valid against {xsd_path}")
    xml = JUnitXml.fromfile(junit_path)
    report = json.load(open(json_path))
    suites = list(xml)
    seen = {"cases": 0, "passed": 0, "failed": 0, "skipped": 0}
    for suite in suites:
        for case in suite:
            seen["cases"] += 1
            kinds = {type(r) for r in case.result}
            if Failure in kinds or Error in kinds:
                seen["failed"] += 1
            elif Skipped in kinds:
                seen["skipped"] += 1
            else:
                seen["passed"] += 1
    want = {k: report["totals"][k] for k in seen}
    problems = []
    if len(suites) != report["totals"]["specs"]:
        problems.append(f"{len(suites)} testsuites, {report['totals']['specs']} specs")
    if seen != want:
        problems.append(f"junitparser counted {seen}, the JSON report says {want}")
    # Per suite: names and statuses agree case by case.
    by_name = {s["name"]: s for s in report["specs"]}
    for suite in suites:
        spec = by_name.get(suite.name)
        if spec is None:
            problems.append(f"testsuite {suite.name} is not in the JSON report")
            continue
        names = [c.name for c in suite]
        if names != [c["name"] for c in spec["cases"]]:
            problems.append(f"{suite.name}: testcase names differ from the JSON report")
        if suite.failures != sum(c["status"] == "failed" for c in spec["cases"]):
            problems.append(f"{suite.name}: failures={suite.failures} disagrees")
    for p in problems:
        print("junit: " + p)
    print(f"junit: {len(suites)} suites, {seen} read back by junitparser"
          + ("" if problems else ", all agree with the JSON report"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3]))
