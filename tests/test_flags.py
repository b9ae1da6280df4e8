"""Every default is declared once (issue 14, item 5): the flags of `train` and `eval` are made
from TrainArgs and EvalArgs (everloop/flags.py), argparse holds no default of its own, and each
field's docstring is its --help line."""
import argparse

import pytest

from everloop import cli, flags
from everloop.evaluate import EvalArgs
from everloop.train import TrainArgs

COMMANDS = {"train": TrainArgs, "eval": EvalArgs}


def subparser(name: str) -> argparse.ArgumentParser:
    action = next(a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


@pytest.mark.parametrize("name", COMMANDS)
def test_flags_are_the_fields_with_no_default_of_their_own(name):
    cls, parser = COMMANDS[name], subparser(name)
    by_dest = {a.dest: a for a in parser._actions}
    docs = flags.field_docs(cls)
    for f in flags.cli_fields(cls):
        action = by_dest[f.name]  # every field is a flag
        assert action.default is argparse.SUPPRESS, f"{name} {f.name}: argparse declares a default"
        assert docs.get(f.name), f"{cls.__name__}.{f.name} has no docstring"
        assert " ".join(action.help.replace("%%", "%").split()).startswith(docs[f.name])
    text = " ".join(parser.format_help().split())
    assert "(default: 250)" in text if name == "train" else "(default: 64)" in text  # from the field


def test_a_flag_not_given_takes_the_dataclass_default():
    a = cli.parser().parse_args(["train", "--data", "D", "--out", "R", "--steps", "3"])
    assert flags.given(a, TrainArgs) == {"data": "D", "out": "R", "steps": 3}
    a = cli.parser().parse_args(["eval", "RUN", "--data", "D", "--frames", "20", "--out", "O", "--quiet"])
    args = EvalArgs(**flags.given(a, EvalArgs))
    assert (args.run, args.frames, args.progress, args.streams) == ("RUN", 20, False, EvalArgs.streams)


def test_train_flags_reach_trainargs():
    a = cli.parser().parse_args(["train", "--data", "D", "--out", "R", "--minutes", "2", "--save-every", "1.5",
                                 "--sample-every", "0", "--set", "lr=0.1", "--quiet", "--seed", "7"])
    got = flags.given(a, TrainArgs)
    assert got == {"data": "D", "out": "R", "minutes": 2.0, "save_every_minutes": 1.5, "sample_every": 0,
                   "overrides": ["lr=0.1"], "progress": False, "seed": 7}


def test_docstrings_are_read_from_the_source():
    docs = flags.field_docs(TrainArgs)
    assert docs["seed"].startswith("Seeds weights") and "given" in docs


def test_painter_config_flags_come_from_the_configs():
    from everloop.painter.agent import AgentConfig
    from everloop.painter.renderer import RendererConfig
    paint = next(a for a in subparser("paint")._actions if isinstance(a, argparse._SubParsersAction))
    for name, cls, fields in (("train-renderer", RendererConfig, ("size", "backend", "batch")),
                              ("train-agent", AgentConfig, ("strokes", "critic", "batch"))):
        by_dest = {a.dest: a for a in paint.choices[name]._actions}
        docs = flags.field_docs(cls)
        for f in fields:
            assert by_dest[f].default is argparse.SUPPRESS and by_dest[f].help.startswith(docs[f])
    a = cli.parser().parse_args(["paint", "train-agent", "--out", "A", "--critic"])
    assert AgentConfig(**flags.given(a, AgentConfig)) == AgentConfig(critic=True)
