"""The README tells the truth about how the project is tested."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command():
    ci_commands = [line for line in (ROOT / ".ci/run").read_text().splitlines()
                   if line and not line.startswith("#")]
    readme = (ROOT / "README.md").read_text()
    test_commands = [line for line in ci_commands if "python -m pytest" in line]
    assert len(test_commands) == 1, test_commands
    assert test_commands[0] in readme


def test_ci_also_runs_the_gpu_images_triton():
    ci = (ROOT / ".ci/run").read_text()
    assert "bash .ci/compat36 setup" in ci and "bash .ci/compat36 test" in ci
    assert 'triton==3.6.0' in (ROOT / ".ci/compat36").read_text()
