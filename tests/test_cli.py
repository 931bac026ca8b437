import pytest

from resreport.cli import main


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["build", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--quick", "--data", "--out", "--device", "--seeds", "--force", "--config"):
        assert option in text


def test_unknown_config_key_exits_2_naming_it(tmp_path, capsys):
    config = tmp_path / "report.toml"
    config.write_text("[cifar]\nn_epoch = 3\n")
    assert main(["build", "--config", str(config), "--out", str(tmp_path / "out")]) == 2
    assert "cifar.n_epoch" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing computed before validation


def test_missing_data_folder_exits_2_and_says_how_to_fix(tmp_path, capsys):
    code = main(["run", "cifar", "--quick", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
    assert code == 2
    error = capsys.readouterr().err
    assert "nowhere" in error


def test_bad_seeds_exits_2(tmp_path, capsys):
    assert main(["run", "cifar", "--seeds", "0", "--out", str(tmp_path)]) == 2
    assert "--seeds" in capsys.readouterr().err


def test_out_pointing_at_a_file_exits_2_before_any_compute(tmp_path, capsys):
    out = tmp_path / "notes.txt"
    out.write_text("precious")
    assert main(["run", "gradients", "--quick", "--out", str(out)]) == 2
    assert "--out" in capsys.readouterr().err
    assert out.read_text() == "precious"


def test_render_without_results_exits_2(tmp_path, capsys):
    assert main(["render", "--out", str(tmp_path / "empty")]) == 2
    assert "resreport build" in capsys.readouterr().err


def test_usage_error_exits_2():
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "everything"])
    assert exit_info.value.code == 2


def test_clean_refuses_a_folder_it_did_not_write(tmp_path, capsys):
    (tmp_path / "thesis.tex").write_text("precious")
    assert main(["clean", "--out", str(tmp_path)]) == 2
    assert (tmp_path / "thesis.tex").exists()


def test_clean_deletes_its_own_output(tmp_path):
    out = tmp_path / "build"
    (out / "results").mkdir(parents=True)
    (out / "report.pdf").write_text("x")
    assert main(["clean", "--out", str(out)]) == 0
    assert not out.exists()


def test_an_unwritable_output_folder_exits_1_with_a_message(tmp_path, capsys, monkeypatch):
    import resreport.pipeline

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "out" / "cache"))

    monkeypatch.setattr(resreport.pipeline, "build", refuse)
    assert main(["run", "gradients", "--quick", "--out", str(tmp_path / "out")]) == 1
    assert "Permission denied" in capsys.readouterr().err


def test_status_lists_gradient_cells_even_when_an_image_does_not_decode(tmp_path, capsys):
    from imagefolder import make_image_folder

    data = make_image_folder(tmp_path / "data", n_train=12, n_test=4)
    (data / "train" / "bird" / "0003.png").write_bytes(b"not an image")
    assert main(["status", "--quick", "--data", str(data), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "gradients: 0 cached, 0 stale, 12 missing, 0 failed" in printed
    assert "data unavailable" in printed and "0003.png" in printed
