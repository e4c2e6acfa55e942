from pathlib import Path

from sweep.config.docs import reference


def test_readme_config_reference_is_current():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert reference() in readme, "run: python -m sweep.config.docs --update-readme"
