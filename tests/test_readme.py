"""The README's commands are the ones CI runs."""

import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = ROOT.joinpath("README.md").read_text()
    blocks = [b.split("```", 1)[0].strip() for b in readme.split("```bash\n")[1:]]
    test_command = blocks[1]
    assert "pytest" in test_command
    assert test_command in ROOT.joinpath(".ci/run").read_text()
