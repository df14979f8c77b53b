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


def test_every_flag_in_the_readmes_commands_exists():
    """The commands the README tells a user to run name only flags their parsers know."""
    import re

    from alexnet_triton import evaluate, neighbours, predict, prepare
    from alexnet_triton.training.config import build_parser as train_parser
    parsers = {"train": train_parser(), "prepare": prepare.parser(),
               "evaluate": evaluate.build_parser(), "predict": predict.build_parser(),
               "neighbours": neighbours.build_parser()}
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^(?:torchrun .*?-m |python -m )alexnet_triton\.(\w+)(.*)$", readme,
                          re.M)
    assert len(commands) >= 8, commands
    for name, rest in commands:
        known = {option for action in parsers[name]._actions for option in action.option_strings}
        for flag in re.findall(r"(?<!\S)(--?[a-z][\w-]*)", rest.split("#")[0]):
            assert flag in known, (name, flag)
