"""Every option's help reaches the terminal whole: rich markup must not eat bracketed text."""

import re

import typer.main

from palette_cli.cli import _register, app


def _options():
    _register()
    group = typer.main.get_command(app)
    assert {"colorize", "train", "eval", "convert"} <= set(group.commands)
    for name, command in group.commands.items():
        for param in command.params:
            yield name, param


def test_bracketed_help_text_is_escaped_for_rich():
    # "[default: the model's]" unescaped is read as a rich style tag and vanishes from --help.
    unescaped = [(name, param.name, param.help) for name, param in _options()
                 if param.help and re.search(r"(?<!\\)\[", param.help)]
    assert unescaped == []


def test_every_option_has_help():
    missing = [(name, param.name) for name, param in _options()
               if getattr(param, "help", "x") is None and param.param_type_name == "option"
               and param.name not in ("help",)]
    assert missing == []


def test_version_and_the_help_of_inputs_says_folders_need_no_recursive():
    from typer.testing import CliRunner

    from palette_cli import __version__

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout == f"palette {__version__}\n"
    helps = {param.name: param.help for name, param in _options() if name == "colorize"}
    assert "folders (the images in them; with --recursive, in their subfolders too)" in helps["inputs"]
    assert helps["recursive"].startswith("Also read the subfolders")
