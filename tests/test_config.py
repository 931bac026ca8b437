import dataclasses

import pytest

from resreport.config import CifarConfig, Config, ConfigError, GradientConfig, load_config, quick


def write(tmp_path, text):
    path = tmp_path / "report.toml"
    path.write_text(text)
    return path


def test_defaults_are_the_labs_grids():
    config = load_config(None)
    assert config.gradients.depths == (2, 5, 10, 25, 50, 75)
    assert config.gradients.bn_every == (None, 10, 5, 3, 1)
    assert config.gradients.n_inits == 30 and config.gradients.n_points == 256 and config.gradients.n_hid == 128
    assert config.cifar.depths == (3, 5, 10, 20)
    assert config.cifar.bn_every == (None, 9, 7, 3, 1)
    assert (config.cifar.n_hid, config.cifar.n_epochs, config.cifar.batch_size) == (64, 20, 512)


def test_shipped_report_toml_matches_the_defaults():
    from pathlib import Path

    shipped = load_config(Path(__file__).parent.parent / "report" / "report.toml")
    assert shipped.gradients == GradientConfig()
    assert shipped.cifar == CifarConfig()
    assert shipped.thresholds == Config().thresholds


def test_none_in_toml_means_no_batchnorm(tmp_path):
    config = load_config(write(tmp_path, '[gradients]\nbn_every = ["none", 4]\n'))
    assert config.gradients.bn_every == (None, 4)


def test_unknown_key_is_an_error_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"gradients\.depth\b"):
        load_config(write(tmp_path, "[gradients]\ndepth = [2]\n"))


def test_unknown_section_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown setting plots"):
        load_config(write(tmp_path, "[plots]\ndpi = 3\n"))


@pytest.mark.parametrize("text, key", [
    ("[gradients]\ndepths = [1, 5]\n", "gradients.depths"),
    ("[gradients]\nbn_every = [0]\n", "gradients.bn_every"),
    ("[gradients]\ndepths = [5, 25]\n", "gradients.depths must include 2"),
    ("[gradients]\nn_inits = 0\n", "gradients.n_inits"),
    ("[gradients]\ntrain_lr = nan\n", "gradients.train_lr"),
    ("[thresholds]\nchange_rtol = nan\n", "thresholds.change_rtol"),
    ("[gradients]\nx_min = 3.0\nx_max = -3.0\n", "gradients.x_min"),
    ("[cifar]\nval_fraction = 1.5\n", "cifar.val_fraction"),
    ("[cifar]\nclasses = [\"bird\"]\n", "cifar.classes"),
    ("[cifar]\nn_epochs = \"twenty\"\n", "cifar.n_epochs"),
    ("[cifar]\nlr = true\n", "cifar.lr"),
    ("[thresholds]\nsmooth_autocorr = 0.2\nshattered_autocorr = 0.5\n", "shattered_autocorr"),
])
def test_impossible_values_are_errors_naming_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(write(tmp_path, text))


def test_invalid_toml_names_the_file(tmp_path):
    path = write(tmp_path, "[gradients\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_quick_preset_shrinks_both_grids_and_stays_valid():
    config = quick(Config()).validate()
    assert len(config.gradients.depths) * len(config.gradients.bn_every) * 2 <= 12
    assert config.cifar.n_epochs < Config().cifar.n_epochs


def test_seeds_override_applies(tmp_path):
    assert load_config(None, n_seeds=3).cifar.n_seeds == 3


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().gradients.n_inits = 3


def test_config_that_is_not_utf8_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "report.toml"
    path.write_bytes(b'[report]\ntitle = "\xff\xfe"\n')
    with pytest.raises(ConfigError, match="report.toml"):
        load_config(path)
