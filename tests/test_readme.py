"""The README tells the truth about how the project is tested."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command():
    ci_commands = [line for line in (ROOT / ".ci/run").read_text().splitlines()
                   if line and not line.startswith("#")]
    test_command = ci_commands[-1]
    assert "pytest" in test_command
    assert test_command in (ROOT / "README.md").read_text()
