"""One options loader: every TOML the app reads reports a missing file, bad TOML or an unknown key the same way."""
from __future__ import annotations

import pytest

from ffn.options import load_options
from ffn.training import load_training_config
from volumes.errors import InputError
from volumes.workspace import CONFIG_NAME, Workspace


def test_bad_toml_is_one_line_naming_the_file_everywhere(tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text("[inference\nmove_threshold = 0.9\n")
    for load, what in ((load_options, "options file"), (load_training_config, "training config")):
        with pytest.raises(InputError, match=f"{what} .*broken.toml is not valid TOML") as caught:
            load(broken)
        assert "\n" not in str(caught.value)
    workspace = Workspace.init(tmp_path / "ws")
    (workspace.root / CONFIG_NAME).write_text("[server\n")
    with pytest.raises(InputError, match=f"workspace config .*{CONFIG_NAME} is not valid TOML"):
        Workspace(workspace.root)


def test_unknown_keys_are_named_and_known_ones_kept(tmp_path):
    options = tmp_path / "inference.toml"
    options.write_text("[inference]\nmove_threshold = 0.8\nmove_treshold = 0.9\n")
    with pytest.raises(InputError, match="unknown option.*move_treshold"):
        load_options(options)
    options.write_text("[inference]\nmove_threshold = 0.8\n")
    assert load_options(options).move_threshold == 0.8
    assert load_options(options, move_threshold=0.7).move_threshold == 0.7  # overrides win
    training = tmp_path / "training.toml"
    training.write_text("[training]\nbatch_size = 2\nbatchsize = 3\n")
    with pytest.raises(InputError, match="training options: unknown option.*batchsize"):
        load_training_config(training)
    with pytest.raises(InputError, match="does not exist"):
        load_options(tmp_path / "missing.toml")
