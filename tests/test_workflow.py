from pathlib import Path

import yaml

WORKFLOW = Path(__file__).parent.parent / ".github" / "workflows" / "report.yml"


def test_workflow_runs_the_full_build_on_push_and_uploads_pdf_and_results():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert "push" in workflow[True]  # YAML 1.1 reads the bare key `on` as True
    steps = workflow["jobs"]["report"]["steps"]
    commands = " ".join(step.get("run", "") for step in steps)
    assert "make test" in commands and "make report" in commands
    assert "--quick" not in commands  # CI on push regenerates the seed-scale report
    uploads = [step["with"]["path"] for step in steps if step.get("uses", "").startswith("actions/upload-artifact")]
    assert any("build/report.pdf" in path for path in uploads)
    assert any("build/results" in path for path in uploads)


def test_ci_script_builds_on_the_shared_data_and_checks_the_report():
    script = (Path(__file__).parent.parent / ".ci" / "run").read_text()
    assert "make test" in script
    assert "shared/data/cifar10-jpeg" in script
    assert "build --quick" in script
    assert "check_report.py" in script
