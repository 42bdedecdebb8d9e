"""Bad input a researcher gives the KD-GAT side: each fails naming the file, line or key and what was expected, or
(an unreadable resume checkpoint) is set aside with a warning instead of failing every rerun."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import torch
import yaml
from testkit import wrapper_refusal

from kdgat.can.messages import CanFormatError
from kdgat.can.reader import detect_format, read_can_file
from kdgat.graph_store import load_graphs, save_graphs
from kdgat.layout import LayoutError, dataset_logs, discover_layout
from kdgat.preprocess import preprocess_dataset
from kdgat.testing import TinyStage, toy_graphs
from kdgat.training.data import load_num_ids
from kdgat.training.loop import LoopSettings, fit
from wrapper_rules import InputError

HCRL_HEADER = "Timestamp,CAN ID,DLC,DATA0,DATA1,DATA2,DATA3,DATA4,DATA5,DATA6,DATA7,Flag\n"
HCRL_ROWS = "1478198376.389427,0316,8,05,21,68,09,21,21,00,6f,R\n1478198376.390065,0260,2,19,21,T\n"


def write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_text(text, encoding=encoding)
    return path


# -- CAN logs -------------------------------------------------------------------------------------------------------
def test_hcrl_csv_with_a_header_line_is_detected(tmp_path):
    # The reader skips the header of converted HCRL copies; detection must look past it too.
    path = write(tmp_path, "converted.csv", HCRL_HEADER + HCRL_ROWS)
    assert detect_format(path) == "hcrl_csv"
    assert read_can_file(path).can_id.tolist() == [0x316, 0x260]


def test_hcrl_csv_header_only_is_an_empty_file(tmp_path):
    path = write(tmp_path, "header.csv", HCRL_HEADER)
    with pytest.raises(CanFormatError, match="header only") as error:
        read_can_file(path)
    assert str(path) in str(error.value)


def test_a_byte_order_mark_neither_hides_the_format_nor_moves_the_bad_line(tmp_path):
    # Excel saves CSVs with a UTF-8 byte-order mark; the fast path (pyarrow) drops it, so must the exact path.
    path = write(tmp_path, "excel.csv", HCRL_ROWS + "1478198376.4,03zz,1,05,R\n", encoding="utf-8-sig")
    assert detect_format(path) == "hcrl_csv"
    with pytest.raises(CanFormatError, match="CAN ID") as error:
        read_can_file(path)
    assert error.value.line == 3
    messages = read_can_file(path, bad_rows="skip")
    assert (len(messages), messages.skipped_rows) == (2, 1)


def test_an_id_above_29_bits_is_named_as_such(tmp_path):
    path = write(tmp_path, "big.csv", HCRL_ROWS + "1478198376.4,7fffffff,1,05,R\n")
    with pytest.raises(CanFormatError) as error:
        read_can_file(path)
    assert error.value.line == 3
    assert "above 0x1FFFFFFF" in str(error.value)
    assert "not a hexadecimal number" not in str(error.value)


# -- preprocess -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"stride": 0}, "preprocess.stride must be an integer >= 1, got 0"),
        ({"window_size": 1}, "preprocess.window_size must be an integer >= 2, got 1"),
    ],
)
def test_window_settings_out_of_range_fail_before_any_log_is_read(tmp_path, options, message):
    # The file does not exist: the settings are checked first (stride 0 used to be a ZeroDivisionError).
    with pytest.raises(ValueError, match=message):
        preprocess_dataset("d", [tmp_path / "never_read.csv"], {}, tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        # `kdgat preprocess --seed -1` failed with numpy's "expected non-negative integer", naming no setting.
        ({"seed": -1}, "preprocess.seed must be an integer >= 0, got -1"),
        ({"seed": 1.5}, "preprocess.seed must be an integer >= 0, got 1.5"),
        # `--set held_out=0.3` was an AttributeError traceback ('float' object has no attribute 'items').
        ({"held_out": 0.3}, r"preprocess.held_out must map each further held-out split to its share \(e.g. "),
    ],
)
def test_a_bad_seed_or_held_out_setting_fails_naming_its_key_before_any_log_is_read(
    tmp_path, options, message
):
    with pytest.raises(ValueError, match=message):
        preprocess_dataset("d", [tmp_path / "never_read.csv"], {}, tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"window_size": 1}, "params.window_size must be an integer >= 2, got 1"),
        ({"held_out": 0.3}, "params.held_out must map each further held-out split to its share (e.g. "),
        ({"val_fraction": 1.5}, "params.val_fraction must be in [0, 1), got 1.5"),
        ({"time_blocks": 1}, "params.time_blocks must be >= 2, got 1"),
        # a ValueError of the reader, not an InputError: a traceback, naming the config key preprocess.bad_rows
        ({"bad_rows": "ignore"}, "params.bad_rows must be one of ('error', 'skip'), got 'ignore'"),
    ],
)
def test_a_bad_setting_given_as_a_wrapper_param_is_named_by_its_param_and_is_an_input_error(
    tmp_path, options, message
):
    # The build_graphs wrapper passes setting_prefix="params": its user has params.window_size, no config key
    # preprocess.window_size, which every message named.
    with pytest.raises(InputError) as error:
        preprocess_dataset(
            "d", [tmp_path / "never_read.csv"], {}, tmp_path / "out", setting_prefix="params", **options
        )
    assert str(error.value).startswith(message), str(error.value)
    assert "preprocess." not in str(error.value)
    # the workflow and the kdgat command still name the config key
    with pytest.raises(InputError, match=re.escape(message.replace("params.", "preprocess.", 1))):
        preprocess_dataset("d", [tmp_path / "never_read.csv"], {}, tmp_path / "out", **options)


FIVE_OUTPUTS = ("train", "val", "test", "vocab", "metadata")


def test_an_output_for_a_split_held_out_does_not_name_fails_before_any_log_is_read(tmp_path):
    # build_graphs' output.fusion without params.held_out: the library ignored the path, preprocessed the whole
    # dataset, and the rule failed on Snakemake's MissingOutputException, which names no param.
    outputs = {key: str(tmp_path / f"{key}.out") for key in (*FIVE_OUTPUTS, "fusion")}
    with pytest.raises(ValueError) as error:
        preprocess_dataset("d", [tmp_path / "never_read.csv"], {}, outputs=outputs)
    assert str(error.value) == (
        "dataset 'd': a path is given for the outputs ['fusion'], which are no split preprocess.held_out names (it "
        "names []): give each a share there (0 takes whole captures only) or leave the output out"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_split_held_out_names_without_an_output_is_named_with_held_out(tmp_path):
    # build_graphs' params.held_out={fusion: 0.2} without output.fusion: "give outputs or out_dir" named no setting
    # a rule has.
    outputs = {key: str(tmp_path / f"{key}.out") for key in FIVE_OUTPUTS}
    with pytest.raises(ValueError) as error:
        preprocess_dataset("d", [tmp_path / "never_read.csv"], {}, outputs=outputs, held_out={"fusion": 0.2})
    assert str(error.value) == (
        "preprocess_dataset: no path for the outputs ['fusion'] (give outputs or out_dir; each split "
        "preprocess.held_out names, ['fusion'], is an output of its own)"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("held_out", "message"),
    [
        # "preprocess_dataset: no path for the outputs ['fusion'] (give outputs or out_dir; ...)" named neither
        # the output the rule lacks nor anything a wrapper user can give
        ({"fusion": 0.2}, "params.held_out names the held-out splits ['fusion'], written to output.fusion, which "
         "the rule does not declare: declare it, or leave ['fusion'] out of params.held_out"),
        # the wrapper writes no held-out split but fusion: the same advice to give outputs or out_dir was no help
        ({"extra": 0.2}, "params.held_out names the held-out splits ['extra'], which no output of the rule can "
         "take (its outputs: output.train, output.val, output.test, output.vocab, output.metadata, "
         "output.fusion): leave them out of params.held_out"),
    ],
)  # fmt: skip
def test_build_graphs_held_out_without_its_output_names_the_output_and_refuses_a_split_it_cannot_write(
    tmp_path, capsys, restore_logging, held_out, message
):
    outputs = {key: f"{key}.out" for key in FIVE_OUTPUTS}
    given = wrapper_refusal(
        "build_graphs",
        tmp_path,
        capsys,
        {"train": tmp_path / "never_read.csv", "test": tmp_path / "never_read_either.csv"},
        {"held_out": held_out, "test_scenario_of_file": "dos"},
        outputs=outputs,
    )
    assert given == message


def test_a_dataset_folder_without_test_scenarios_fails_at_once(tmp_path):
    # Otherwise every model is trained and evaluated, and only the summary fails (no test results).
    (tmp_path / "train_01_attack_free").mkdir()
    write(tmp_path / "train_01_attack_free", "normal.csv", HCRL_ROWS)
    (tmp_path / "tset_01_dos").mkdir()  # a typo: not a test_* folder
    with pytest.raises(
        FileNotFoundError, match=r"no CAN logs \(\*\.csv, \*\.txt, \*\.log.*under test_NN_<scen"
    ):
        discover_layout(tmp_path)


def test_a_dataset_path_that_names_a_log_file_is_called_a_file_not_missing(tmp_path):
    # `kdgat preprocess --path train_01/normal.csv` (or datasets.<name>.path) said the directory "does not exist".
    log = write(tmp_path, "normal.csv", HCRL_ROWS)
    with pytest.raises(
        LayoutError, match=rf"^datasets.lab.path: dataset directory {log} is a file, not a folder \("
    ):
        dataset_logs("lab", {"path": str(log)})
    with pytest.raises(
        LayoutError, match=rf"^datasets.lab.path: dataset directory {tmp_path / 'no'} does not exist"
    ):
        dataset_logs("lab", {"path": str(tmp_path / "no")})


def test_no_training_logs_says_which_files_count_as_logs(tmp_path):
    (tmp_path / "train_01_attack_free").mkdir()
    write(tmp_path / "train_01_attack_free", "normal.csv.gz", "")
    with pytest.raises(FileNotFoundError, match=r"\*\.csv, \*\.txt, \*\.log; paths containing \['suppress'"):
        discover_layout(tmp_path)


# -- what a training job reads --------------------------------------------------------------------------------------
def test_a_truncated_graph_file_is_named(tmp_path):
    path = tmp_path / "train.pt"
    save_graphs(toy_graphs(4, num_ids=20), path)
    path.write_bytes(path.read_bytes()[:2000])  # a copy cut short
    with pytest.raises(ValueError, match="not a readable kdgat graph file") as error:
        load_graphs(path)
    assert str(path) in str(error.value)


def test_metadata_that_is_not_json_is_called_so(tmp_path):
    path = write(tmp_path, "metadata.json", '{"dataset": "d", "num_i')
    with pytest.raises(ValueError, match="not valid JSON") as error:
        load_num_ids(path)
    assert str(path) in str(error.value)
    with pytest.raises(ValueError, match="expected an integer 'num_ids'"):
        load_num_ids(write(tmp_path, "other.json", '{"dataset": "d"}'))


def test_metadata_that_is_not_utf8_is_called_not_json_naming_the_file(tmp_path):
    # A copy saved by an editor in Latin-1: Python's own UnicodeDecodeError names no file.
    path = write(
        tmp_path, "metadata.json", '{"dataset": "Fahrzeug Größe", "num_ids": 20}', encoding="latin-1"
    )
    with pytest.raises(ValueError) as error:
        load_num_ids(path)
    assert str(error.value).startswith(f"{path}: not valid JSON (not UTF-8 text: ")


def test_an_unreadable_checkpoint_is_set_aside_not_a_failure_at_every_rerun(tmp_path, caplog):
    checkpoint = tmp_path / "last.pt"
    fit(TinyStage(), LoopSettings(epochs=1, patience=1, checkpoint=checkpoint), "f")
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])  # e.g. a copy cut short
    with caplog.at_level(logging.WARNING, logger="kdgat.training"):
        result = fit(TinyStage(), LoopSettings(epochs=2, patience=2, checkpoint=checkpoint), "f")
    assert result["resumed_from"] is None and len(result["history"]) == 2
    assert f"ignoring unreadable checkpoint {checkpoint}" in caplog.text
    assert torch.load(checkpoint, weights_only=False)["epoch"] == 1  # written afresh, readable again


def test_a_number_yaml_read_as_text_says_how_to_write_it():
    from kdgat.training.settings import SettingsError, StageSettings

    section = {"training": {"gat": {"lr": "3e-3"}}}  # what YAML makes of `lr: 3e-3`
    with pytest.raises(
        SettingsError, match=r"kd_gat.training.gat.lr: expected float, got '3e-3' \(YAML reads"
    ):
        StageSettings.from_config(section, "gat", "teacher")
    with pytest.raises(SettingsError, match=r"got 'many'$"):  # no hint where the text is no number
        StageSettings.from_config({"training": {"gat": {"epochs": "many"}}}, "gat", "teacher")


@pytest.mark.parametrize("text", ["3e-3", "1e5", "1.0e5", "2.5E2"])
def test_the_yaml_hint_names_every_number_yaml_reads_as_text_and_its_advice_gives_a_float(text):
    # YAML 1.1 wants a decimal point and a signed exponent: 1.0e5 is text as much as 1e5.
    from kdgat.training.settings import SettingsError, StageSettings

    assert isinstance(yaml.safe_load(f"lr: {text}")["lr"], str)
    with pytest.raises(SettingsError, match=r"\(YAML reads a number like") as error:
        StageSettings.from_config({"training": {"gat": {"lr": text}}}, "gat", "teacher")
    for advice in re.findall(r"\d\.\de[-+]\d", str(error.value)):
        assert isinstance(yaml.safe_load(f"lr: {advice}")["lr"], float), advice
    with pytest.raises(SettingsError, match=r"got '1e3'$"):  # an integer setting: no advice to write a float
        StageSettings.from_config({"training": {"gat": {"epochs": "1e3"}}}, "gat", "teacher")


# -- a dataset's config entry (kdgat.layout.dataset_logs: the workflow and the kdgat command) ----------------------
@pytest.mark.parametrize(
    "spec, message",
    [
        (
            {"path": "data/can", "files": {"train": ["a.csv"], "test": {"dos": ["b.csv"]}}},
            r"^datasets.lab: give its logs in exactly one of synthetic.files, path or files; it has \['path', "
            r"'files'\]",
        ),
        (
            {"files": {"train": ["a.csv"], "test": {}}},
            r"^datasets.lab: no test scenarios; give .* `files.test`",
        ),
        (
            {"files": {"train": ["a.csv"], "test": {"dos": []}}},  # a scenario without a log is none
            r"^datasets.lab: no test scenarios; give .* `files.test`",
        ),
        (
            {
                "synthetic": {
                    "files": [{"split": "train_01_x", "name": "n"}, {"split": "fusion_01_x", "name": "n"}]
                }
            },
            r"^datasets.lab.synthetic.files: split 'fusion_01_x' is neither train_\*, test_\* nor a held-out split",
        ),
        ({"files": {"train": [], "test": {"dos": ["b.csv"]}}}, r"^datasets.lab: no training logs"),
        (
            # beside a scenario with logs, one without would vanish from test.pt (the rule passes logs only)
            {"files": {"train": ["a.csv"], "test": {"dos": ["b.csv"], "fuzzy": []}}},
            r"^datasets.lab.files.test.fuzzy: the test scenario has no logs; give at least one or remove it",
        ),
    ],
)
def test_a_dataset_entry_without_one_usable_set_of_logs_is_named(spec, message):
    with pytest.raises(LayoutError, match=message):
        dataset_logs("lab", spec, held_out=())


def test_whole_fusion_captures_are_refused_when_no_fusion_split_is_written(tmp_path):
    # With preprocess.held_out.fusion null nothing would read them: an error in every mode, not logs left out.
    words = r"hold whole captures of \['fusion'\], but preprocess.held_out does not write that split"
    with pytest.raises(LayoutError, match=r"^datasets.lab.files.<split> " + words):
        dataset_logs("lab", {"files": {"train": ["a.csv"], "test": {"dos": ["b.csv"]}, "fusion": ["f.csv"]}})
    for folder in ("train_01_x", "test_01_dos", "fusion_01_dos"):
        (tmp_path / folder).mkdir()
        write(tmp_path / folder, "log.csv", HCRL_ROWS)
    with pytest.raises(LayoutError, match=r"^datasets.lab.path: <split>_\*/ folders " + words):
        dataset_logs("lab", {"path": str(tmp_path)}, held_out=())
    with pytest.raises(LayoutError, match=r"^--path: <split>_\*/ folders "):
        dataset_logs("lab", {"path": str(tmp_path)}, held_out=(), path_name="--path")
    assert dataset_logs("lab", {"path": str(tmp_path)}, held_out=["fusion"])[2]["fusion"]


def test_a_dataset_folder_leaves_out_the_logs_preprocess_exclude_names(tmp_path):
    logs = {"train_01_x": ["normal.csv", "suppress.csv"], "test_01_dos": ["dos.csv", "masquerade_dos.csv"],
            "fusion_01_x": ["normal.csv", "suppress.csv"]}  # fmt: skip
    for folder, names in logs.items():
        (tmp_path / folder).mkdir()
        for name in names:
            write(tmp_path / folder, name, HCRL_ROWS)

    for exclude in ([], ["suppress"], ["masquerade", "suppress"]):
        train, test, whole = dataset_logs("lab", {"path": str(tmp_path)}, ["fusion"], exclude)
        found = [*train, *(f for files in test.values() for f in files), *whole["fusion"]]
        kept = {f"{folder}/{name}" for folder, names in logs.items() for name in names}
        kept = {log for log in kept if not any(word in log for word in exclude)}
        assert {str(Path(f).relative_to(tmp_path)) for f in found} == kept, exclude


def test_an_empty_exclude_word_is_refused_by_every_layout_call_naming_its_index(tmp_path):
    """Every path contains "": each call left out every log, and a dataset folder was said to hold none ("has no
    CAN logs ... under train_*/"), naming the folder, not the word; only the config schema refused it."""
    from kdgat.layout import PreprocessError, compressed_logs, discover_layout, held_out_captures

    for log in ("train_01_x/normal.csv", "test_01_dos/attack.csv", "fusion_01_x/a.csv"):
        (tmp_path / log).parent.mkdir(parents=True, exist_ok=True)
        write(tmp_path, log, HCRL_ROWS)
    calls = [
        lambda exclude: dataset_logs("lab", {"path": str(tmp_path)}, ["fusion"], exclude),
        lambda exclude: dataset_logs(
            "lab", {"files": {"train": ["a.csv"], "test": {"dos": ["b.csv"]}}}, (), exclude
        ),
        lambda exclude: discover_layout(tmp_path, exclude),
        lambda exclude: held_out_captures(tmp_path, ["fusion"], exclude),
        lambda exclude: compressed_logs(tmp_path, ["train"], exclude),
    ]
    for call in calls:
        for exclude, index in ((["suppress", ""], 1), ([""], 0)):
            with pytest.raises(
                PreprocessError, match=rf"^preprocess\.exclude\[{index}\]: an empty word drops every"
            ):
                call(exclude)
        call(["suppress"])  # a word is taken as before
    assert discover_layout(tmp_path, [])[0] == [tmp_path / "train_01_x" / "normal.csv"]


def test_preprocess_exclude_matches_folder_names_too_and_ignores_case(tmp_path):
    # HCRL-style test_NN_masquerade/ folders hold generic file names; Masquerade.csv is the same attack.
    for log in ("train_01_free/normal.csv", "train_02_x/Masquerade.csv", "test_01_dos/attack.csv",
                "test_02_masquerade/attack.csv", "fusion_01_SUPPRESS/a.csv", "fusion_02_x/b.csv"):  # fmt: skip
        (tmp_path / log).parent.mkdir(parents=True, exist_ok=True)
        write(tmp_path, log, HCRL_ROWS)
    train, test, whole = dataset_logs("lab", {"path": str(tmp_path)}, ["fusion"], ["masquerade", "Suppress"])
    assert train == [str(tmp_path / "train_01_free" / "normal.csv")]
    assert test == {"dos": [str(tmp_path / "test_01_dos" / "attack.csv")]}
    assert whole == {"fusion": [str(tmp_path / "fusion_02_x" / "b.csv")]}


def test_compressed_logs_in_a_dataset_folder_are_refused_not_left_out(tmp_path):
    # dos.csv.gz is no *.csv: the folder used to drop it (and a test folder holding only such logs, its scenario)
    # without a word, while a compressed log given by name is refused (decompress it first).
    logs = {
        "train_01_x": ["normal.csv", "dos.csv.gz"],
        "test_01_dos": ["dos.csv"],
        "test_02_gear": ["gear.CSV.xz"],
    }
    for folder, names in logs.items():
        (tmp_path / folder).mkdir()
        for name in names:
            write(tmp_path / folder, name, HCRL_ROWS)
    words = r"2 compressed CAN log\(s\) \(test_02_gear/gear.CSV.xz, train_01_x/dos.csv.gz\), which the readers do not"
    with pytest.raises(
        LayoutError, match=r"^datasets.lab.path: " + words + r" read: decompress them first \(e.g. unxz"
    ):
        dataset_logs("lab", {"path": str(tmp_path)})
    # a compressed log whose name preprocess.exclude names is left out like any other
    (tmp_path / "test_02_gear" / "gear.CSV.xz").rename(tmp_path / "test_02_gear" / "masquerade.csv.xz")
    (tmp_path / "train_01_x" / "dos.csv.gz").unlink()
    assert dataset_logs("lab", {"path": str(tmp_path)})[1] == {
        "dos": [str(tmp_path / "test_01_dos" / "dos.csv")]
    }


def test_a_folders_logs_come_in_path_order_whatever_order_the_file_system_lists_them_in(tmp_path):
    # kdgat.layout._logs: "sorted". The order of the logs decides the preprocessed data, so a folder (subfolders
    # included) must give the same list on every file system; the names are created in neither sorted nor reverse
    # order, so a listing in creation order (or its reverse, or a hash order) is not the sorted one.
    names = ["k.csv", "b.txt", "sub/z.csv", "e.log", "a.csv", "sub/c.csv", "m.csv", "d.txt", "h.csv", "c.log"]
    for folder in ("train_01_x", "test_01_dos"):
        for name in names:
            (tmp_path / folder / name).parent.mkdir(parents=True, exist_ok=True)
            write(tmp_path / folder, name, HCRL_ROWS)
    train, test = discover_layout(tmp_path)
    expected = sorted(names)
    assert [f.relative_to(tmp_path / "train_01_x").as_posix() for f in train] == expected
    assert [f.relative_to(tmp_path / "test_01_dos").as_posix() for f in test["dos"]] == expected


@pytest.mark.parametrize("held_out", [(), ["fusion"]], ids=["no-fusion-split", "fusion-split"])
def test_a_compressed_fusion_capture_is_refused_and_named_once_whether_or_not_a_fusion_split_is_written(
    tmp_path, held_out
):
    # Without a fusion split in preprocess.held_out, a fusion_*/ folder holding only compressed captures was left
    # out as "not a log" without a word (its uncompressed captures would be refused); with one, its folders were
    # searched once for held_out's fusion and again as a known held-out split, naming each capture twice.
    for folder, name in [
        ("train_01_x", "normal.csv"),
        ("test_01_dos", "dos.csv"),
        ("fusion_01_x", "rpm.csv.gz"),
    ]:
        (tmp_path / folder).mkdir()
        write(tmp_path / folder, name, HCRL_ROWS)
    with pytest.raises(
        LayoutError,
        match=r"^datasets.lab.path: 1 compressed CAN log\(s\) \(fusion_01_x/rpm.csv.gz\), which the readers do not "
        r"read: decompress them first \(e.g. gunzip rpm.csv.gz\)$",
    ):
        dataset_logs("lab", {"path": str(tmp_path)}, held_out=held_out)


def test_an_archive_of_logs_in_a_dataset_folder_is_refused_not_its_scenario_dropped(tmp_path):
    # fuzzy.zip (an archive named without the .csv of the log inside, as downloads are) was no compressed *log*:
    # the folder left it out, and test_02_fuzzy/ holding only it vanished as a scenario while the run went on.
    logs = {"train_01_x": ["normal.csv"], "test_01_dos": ["dos.csv"], "test_02_fuzzy": ["fuzzy.zip"],
            "test_03_gear": ["gear.tar.gz"]}  # fmt: skip
    for folder, names in logs.items():
        (tmp_path / folder).mkdir()
        for name in names:
            write(tmp_path / folder, name, HCRL_ROWS)
    with pytest.raises(
        LayoutError,
        match=r"^datasets.lab.path: 2 compressed CAN log\(s\) \(test_02_fuzzy/fuzzy.zip, test_03_gear/gear.tar.gz\), "
        r"which the readers do not read: decompress them first \(e.g. unzip fuzzy.zip\)$",
    ):
        dataset_logs("lab", {"path": str(tmp_path)})


def test_hidden_files_and_folders_in_a_dataset_folder_are_no_logs(tmp_path):
    # JupyterLab's .ipynb_checkpoints/dos-checkpoint.csv copies and macOS's ._dos.csv resource files were read as
    # logs: every capture opened in the editor counted twice (in training, or in its test scenario), and ._ files
    # (not text) failed the run.
    logs = {"train_01_x": ["normal.csv", ".ipynb_checkpoints/normal-checkpoint.csv", "._normal.csv"],
            "test_01_dos": ["dos.csv", ".ipynb_checkpoints/dos-checkpoint.csv", ".hidden/old.csv"],
            "fusion_01_x": ["rpm.csv", "._rpm.csv.gz"]}  # fmt: skip
    for folder, names in logs.items():
        for name in names:
            (tmp_path / folder / name).parent.mkdir(parents=True, exist_ok=True)
            write(tmp_path / folder, name, HCRL_ROWS)
    train, test, whole = dataset_logs("lab", {"path": str(tmp_path)}, held_out=["fusion"])
    assert train == [str(tmp_path / "train_01_x" / "normal.csv")]
    assert test == {"dos": [str(tmp_path / "test_01_dos" / "dos.csv")]}
    assert whole == {"fusion": [str(tmp_path / "fusion_01_x" / "rpm.csv")]}


def test_files_of_a_dataset_folder_that_are_not_read_as_logs_are_warned_of_once_by_name(tmp_path, caplog):
    # kdgat.unread_files: dos.parquet, a .tsv export and a rotated dos.log.1 were left out of the split folders
    # without a word (only *.csv, *.txt and *.log are read); README*, LICENSE*, *.md, *metadata.json (ROAD's
    # capture_metadata.json), hidden files and paths preprocess.exclude names are no logs and not warned of.
    logs = {"train_01_x": ["normal.csv", "normal.parquet", "README", "README.rst", "LICENSE", "notes.md",
                           ".DS_Store", "masquerade.tsv"],
            "test_01_dos": ["dos.csv", "dos.log.1", "metadata.json", "capture_metadata.json", "sub/dos.tsv"],
            "test_02_fuzzy": ["a.json", "b.json", "c.json", "d.json"],
            "fusion_01_x": ["rpm.pcap"], "other": ["ignored.parquet"]}  # fmt: skip
    for folder, names in logs.items():
        for name in names:
            (tmp_path / folder / name).parent.mkdir(parents=True, exist_ok=True)
            write(tmp_path / folder, name, HCRL_ROWS)
    with caplog.at_level(logging.WARNING, logger="kdgat.layout"):
        train, test, _ = dataset_logs("lab", {"path": str(tmp_path)})
        dataset_logs("lab", {"path": str(tmp_path)})  # the workflow asks for a dataset's logs many times
    assert train == [str(tmp_path / "train_01_x" / "normal.csv")]
    assert test == {"dos": [str(tmp_path / "test_01_dos" / "dos.csv")]}
    assert [record.getMessage() for record in caplog.records] == [
        "datasets.lab.path: 8 file(s) in its split folders are not read, since only *.csv, *.txt, *.log files "
        "are read as CAN logs: fusion_01_x/rpm.pcap, test_01_dos/dos.log.1, test_01_dos/sub/dos.tsv, "
        "test_02_fuzzy/a.json, test_02_fuzzy/b.json ... (3 more); to use a capture, save it as one of those "
        "(e.g. CSV), else move the files out of the split folders (readme*, license*, licence*, *.md, "
        "*metadata.json files are not warned of)"
    ]
    # a folder of logs only, or with only such files, warns of nothing
    for folder in ("test_02_fuzzy", "fusion_01_x"):
        for path in (tmp_path / folder).iterdir():
            path.unlink()
    for path in [*tmp_path.glob("*/*.parquet"), *tmp_path.glob("test_01_dos/*.1"), *tmp_path.glob("*/sub/*")]:
        path.unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kdgat.layout"):
        dataset_logs("lab", {"path": str(tmp_path)})
    assert caplog.records == []


def test_a_readme_or_licence_with_a_log_suffix_in_a_split_folder_is_not_read_as_a_log(tmp_path, caplog):
    """A README.txt (or LICENSE.txt, readme.csv) beside the captures was read as a CAN log for its suffix, and
    failed as an unknown format or bad rows; names starting README, LICENSE or LICENCE (any case) are no log, and
    not warned of either. A capture named otherwise is still read."""
    logs = {"train_01_x": ["normal.csv", "README.txt", "LICENSE.txt"],
            "test_01_dos": ["dos.txt", "readme.csv", "Licence.log"],
            "fusion_01_x": ["rpm.csv", "ReadMe.txt"]}  # fmt: skip
    for folder, names in logs.items():
        (tmp_path / folder).mkdir()
        for name in names:
            prose = name.lower().startswith(("readme", "licen"))
            write(
                tmp_path / folder,
                name,
                "This folder holds the captures.\nMIT License\n" if prose else HCRL_ROWS,
            )
    with caplog.at_level(logging.WARNING, logger="kdgat.layout"):
        train, test, whole = dataset_logs("lab", {"path": str(tmp_path)}, held_out=("fusion",))
    assert train == [str(tmp_path / "train_01_x" / "normal.csv")]
    assert test == {"dos": [str(tmp_path / "test_01_dos" / "dos.txt")]}
    assert whole == {"fusion": [str(tmp_path / "fusion_01_x" / "rpm.csv")]}
    assert caplog.records == [], [record.getMessage() for record in caplog.records]


def test_two_test_folders_of_one_scenario_are_one_scenario_with_both_logs(tmp_path):
    for folder, name in [("train_01_x", "t.csv"), ("test_01_dos", "a.csv"), ("test_02_dos", "b.csv")]:
        (tmp_path / folder).mkdir()
        write(tmp_path / folder, name, HCRL_ROWS)
    train, test = discover_layout(tmp_path)
    assert {name: [f.name for f in files] for name, files in test.items()} == {"dos": ["a.csv", "b.csv"]}


def test_a_dataset_entry_gives_train_test_and_whole_fusion_captures():
    spec = {"synthetic": {"files": [
        {"split": "train_01_normal", "name": "normal"},
        {"split": "test_02_dos", "name": "dos"},
        {"split": "fusion_01_normal", "name": "normal"},
    ]}}  # fmt: skip
    train, test, whole = dataset_logs("lab", spec, held_out=["fusion"])
    assert train == ["resources/preprocess/lab/train_01_normal/normal.csv"]
    assert test == {"dos": ["resources/preprocess/lab/test_02_dos/dos.csv"]}
    assert whole == {"fusion": ["resources/preprocess/lab/fusion_01_normal/normal.csv"]}


def test_a_dataset_entry_keeps_the_order_of_its_logs(tmp_path):
    # The order of the logs decides the preprocessed data: synthetic.files and files in config order (as the
    # preprocess module read them before kdgat.layout.dataset_logs), a folder in sorted order.
    spec = {"synthetic": {"files": [
        {"split": "train_02_with_attacks", "name": "rpm"},
        {"split": "test_02_fuzzy", "name": "fuzzy"},
        {"split": "fusion_02_with_attacks", "name": "rpm"},
        {"split": "train_01_attack_free", "name": "normal"},
        {"split": "test_01_dos", "name": "dos"},
        {"split": "fusion_02_with_attacks", "name": "dos"},
    ]}}  # fmt: skip
    train, test, whole = dataset_logs("lab", spec, held_out=["fusion"], synthetic_root="r")
    assert train == ["r/lab/train_02_with_attacks/rpm.csv", "r/lab/train_01_attack_free/normal.csv"]
    assert list(test.items()) == [
        ("fuzzy", ["r/lab/test_02_fuzzy/fuzzy.csv"]),
        ("dos", ["r/lab/test_01_dos/dos.csv"]),
    ]
    assert whole == {
        "fusion": ["r/lab/fusion_02_with_attacks/rpm.csv", "r/lab/fusion_02_with_attacks/dos.csv"]
    }

    files = {
        "train": ["b.csv", "a.csv"],
        "test": {"z": ["2.csv", "1.csv"], "a": ["0.csv"]},
        "fusion": ["f2", "f1"],
    }
    train, test, whole = dataset_logs("lab", {"files": files}, held_out=["fusion"])
    assert (train, list(test.items()), whole) == (
        files["train"],
        list(files["test"].items()),
        {"fusion": ["f2", "f1"]},
    )

    for folder, name in [("train_02_x", "b.csv"), ("train_02_x", "a.log"), ("train_01_y", "z.txt"),
                         ("test_02_b", "x.csv"), ("test_01_a", "y.csv"), ("fusion_02_w", "k.csv"),
                         ("fusion_01_v", "m.csv")]:  # fmt: skip
        (tmp_path / folder).mkdir(exist_ok=True)
        write(tmp_path / folder, name, HCRL_ROWS)
    train, test, whole = dataset_logs("lab", {"path": str(tmp_path)}, held_out=["fusion"])
    assert [f.removeprefix(f"{tmp_path}/") for f in train] == [
        "train_01_y/z.txt",
        "train_02_x/a.log",
        "train_02_x/b.csv",
    ]
    assert list(test) == ["a", "b"]
    assert [f.removeprefix(f"{tmp_path}/") for f in whole["fusion"]] == [
        "fusion_01_v/m.csv",
        "fusion_02_w/k.csv",
    ]


# -- teachers of the training stages --------------------------------------------------------------------------------
TEACHERS_OF = {
    "vgae": ("teacher",),
    "gat": ("teacher",),
    "dqn": ("teacher_dqn", "teacher_vgae", "teacher_gat"),
}


def _train_without_reading(tmp_path, stage: str, variant: str, teachers: dict):
    """``<stage>.run`` as the train_<stage> wrapper calls it, on files that do not exist (``teachers``, and any
    other input given there, replace them): only a check made before anything is read can answer."""
    from kdgat.training import dqn, gat, vgae
    from kdgat.training.settings import StageSettings

    settings = StageSettings.from_config({"device": "cpu"}, stage, variant).as_dict()
    outputs = {name: str(tmp_path / "out" / name) for name in ("model", "metrics", "history")}
    never = str(tmp_path / "never_read")
    graphs = (
        {"fit": never, "vgae": never, "gat": never}
        if stage == "dqn"
        else {"train": never, "val": never} | ({"vgae": never} if stage == "gat" else {})
    )
    run = {"vgae": vgae.run, "gat": gat.run, "dqn": dqn.run}[stage]
    return run(metadata=never, settings=settings, outputs=outputs, **(graphs | teachers))


@pytest.mark.parametrize("stage", list(TEACHERS_OF))
def test_a_teacher_given_to_a_variant_that_distils_from_none_is_refused_before_anything_is_read(
    tmp_path, stage
):
    # train_gat/train_vgae with input.teacher and the teacher variant's settings died at the first batch on
    # "AttributeError: 'NoneType' object has no attribute 'temperature'" ('alpha' for the VGAE).
    names = TEACHERS_OF[stage]
    with pytest.raises(ValueError) as error:
        _train_without_reading(tmp_path, stage, "student", {names[0]: str(tmp_path / "teacher.pt")})
    assert str(error.value) == (
        f"the {stage} stage of variant 'student' distils from no teacher, but ['{names[0]}'] is given: only "
        "student_kd takes the teacher's models; leave it out, or give the settings of variant student_kd"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("stage", list(TEACHERS_OF))
def test_a_student_kd_stage_without_its_teacher_is_refused_before_anything_is_read(tmp_path, stage):
    # train_gat/train_vgae of variant student_kd without input.teacher trained a plain student, and its
    # metrics.json said "knowledge_distillation": true.
    with pytest.raises(ValueError) as error:
        _train_without_reading(tmp_path, stage, "student_kd", {})
    assert str(error.value) == (
        f"the {stage} stage of variant 'student_kd' distils from the teacher: give the teacher's models as "
        f"{list(TEACHERS_OF[stage])}"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_gat_curriculum_without_its_vgae_is_refused_naming_the_input_before_anything_is_read(tmp_path):
    # train_gat without input.vgae, on the default settings (curriculum on): "the GAT curriculum needs the trained
    # VGAE of the same variant", after the graphs were loaded, naming neither the input nor the setting.
    with pytest.raises(ValueError) as error:
        _train_without_reading(tmp_path, "gat", "teacher", {"vgae": None})
    assert str(error.value) == (
        "the GAT curriculum (kd_gat.curriculum.enabled) draws on the trained VGAE of the same variant: give its "
        "model.pt as vgae (the train_gat wrapper's input.vgae), or disable the curriculum"
    )
    assert list(tmp_path.iterdir()) == []


def test_gat_train_with_the_curriculum_on_and_no_vgae_is_an_input_error_naming_the_setting_and_argument():
    """gat.train (a direct caller's; run() refuses it first) raised a plain ValueError "the GAT curriculum needs the
    trained VGAE of the same variant": failure_logged reported it with a traceback, as a bug, naming neither the
    setting nor the argument."""
    from kdgat.logs import failure_logged
    from kdgat.training import gat
    from kdgat.training.settings import SettingsError, StageSettings
    from wrapper_rules import InputRefused

    settings = StageSettings.from_config({"device": "cpu", "curriculum": {"enabled": True}}, "gat", "teacher")
    with pytest.raises(InputRefused) as ended, failure_logged("train_gat"):
        gat.train(toy_graphs(4, num_ids=20), toy_graphs(2, num_ids=20), 20, settings)
    assert isinstance(ended.value.error, SettingsError) and isinstance(ended.value.error, ValueError)
    assert str(ended.value) == (
        "the GAT curriculum (kd_gat.curriculum.enabled) needs the trained VGAE of the same variant: give it as "
        "kdgat.training.gat.train's vgae, or disable the curriculum"
    )


def test_a_student_kd_dqn_with_only_some_of_its_teachers_models_is_refused_before_anything_is_read(tmp_path):
    with pytest.raises(ValueError) as error:
        _train_without_reading(tmp_path, "dqn", "student_kd", {"teacher_dqn": str(tmp_path / "teacher.pt")})
    assert (
        str(error.value)
        == "DQN distillation needs all three teacher models; missing ['teacher_vgae', 'teacher_gat']"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("stage", list(TEACHERS_OF))
def test_a_checkpoint_naming_a_job_file_or_a_file_that_is_no_checkpoint_is_refused_and_kept(tmp_path, stage):
    # The train_<stage> wrappers' params.checkpoint naming the job's own val.pt (or another stage's model.pt) set
    # it aside with a warning, overwrote it after the first epoch and deleted it after success: the input was lost.
    # A file torch cannot read is a checkpoint cut short, set aside as before
    # (test_an_unreadable_checkpoint_is_set_aside_not_a_failure_at_every_rerun).
    from kdgat.files import FileContentError
    from kdgat.model_store import save_model
    from kdgat.models import GAT

    notes, model = tmp_path / "notes.pt", tmp_path / "gat_model.pt"
    torch.save({"my": "notes"}, notes)
    save_model(GAT(20), "gat", {"num_ids": 20}, model)
    never = str(tmp_path / "never_read")
    with pytest.raises(FileContentError) as error:
        _train_without_reading(tmp_path, stage, "teacher", {"checkpoint": never})
    # every input is never_read here: the first the job names is the one the message names
    first = "fit" if stage == "dqn" else "train"
    assert str(error.value) == (
        f"checkpoint {never} is also the job's {first} file; the checkpoint is overwritten after every epoch and "
        "deleted after success: give another path"
    )
    with pytest.raises(FileContentError) as error:
        _train_without_reading(tmp_path, stage, "teacher", {"checkpoint": str(tmp_path / "out" / "model")})
    assert "is also the job's model file" in str(error.value)
    for path, what in (
        (notes, "a file holding dict"),
        (model, "a kd_gat gat model file"),
    ):
        with pytest.raises(FileContentError) as error:
            _train_without_reading(tmp_path, stage, "teacher", {"checkpoint": str(path)})
        assert str(error.value) == (
            f"checkpoint {path} is {what}, not a training checkpoint: the job would overwrite it after its first "
            "epoch and delete it after success; give another path (or remove the file)"
        )
    assert torch.load(notes) == {"my": "notes"} and model.is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["gat_model.pt", "notes.pt"]


def _gat_settings_to_the_vgae_stage(tmp_path):
    from kdgat.training import vgae
    from kdgat.training.settings import StageSettings

    settings = StageSettings.from_config({"device": "cpu"}, "gat", "teacher").as_dict()
    outputs = {name: str(tmp_path / "out" / name) for name in ("model", "metrics", "history")}
    never = str(tmp_path / "never_read")
    return vgae.run(train=never, val=never, metadata=never, settings=settings, outputs=outputs)


def _validation_graphs_that_are_the_training_graphs(tmp_path):
    import json

    from kdgat.training import vgae
    from kdgat.training.settings import StageSettings

    train = tmp_path / "train.pt"
    save_graphs(toy_graphs(6, num_ids=20), train)
    (tmp_path / "metadata.json").write_text(json.dumps({"num_ids": 20}))
    settings = StageSettings.from_config({"device": "cpu"}, "vgae", "teacher").as_dict()
    outputs = {name: str(tmp_path / "out" / name) for name in ("model", "metrics", "history")}
    return vgae.run(
        train=train, val=train, metadata=tmp_path / "metadata.json", settings=settings, outputs=outputs
    )


def _a_device_torch_does_not_know(tmp_path):
    from kdgat.runtime import select_device

    return select_device("gpu")


USER_MISTAKES_OF_TRAINING = {
    "a teacher given to the student variant": lambda tmp_path: _train_without_reading(
        tmp_path, "gat", "student", {"teacher": str(tmp_path / "teacher.pt")}
    ),
    "student_kd without its teacher": lambda tmp_path: _train_without_reading(
        tmp_path, "vgae", "student_kd", {}
    ),
    "a gat curriculum without its vgae": lambda tmp_path: _train_without_reading(
        tmp_path, "gat", "teacher", {"vgae": None}
    ),
    "a dqn with some of its teacher's models": lambda tmp_path: _train_without_reading(
        tmp_path, "dqn", "student_kd", {"teacher_dqn": str(tmp_path / "teacher.pt")}
    ),
    "settings of another stage": _gat_settings_to_the_vgae_stage,
    "validation graphs that are the training graphs": _validation_graphs_that_are_the_training_graphs,
    "a device torch does not know": _a_device_torch_does_not_know,
}


@pytest.mark.parametrize("mistake", list(USER_MISTAKES_OF_TRAINING))
def test_a_training_wrappers_refusal_of_a_users_mistake_is_an_input_error_not_a_traceback(tmp_path, mistake):
    # The train_<stage> wrappers logged these refusals (meta.yaml: "refused before anything is read") with a Python
    # traceback, as a bug: only an InputError ends a wrapper with its one line and exit status 1 (failure_logged).
    from wrapper_rules import InputError

    with pytest.raises(ValueError) as error:
        USER_MISTAKES_OF_TRAINING[mistake](tmp_path)
    assert isinstance(error.value, InputError), f"{type(error.value).__name__}: {error.value}"
    assert not (tmp_path / "out").exists()


# -- what a training wrapper shows of a user's mistake ---------------------------------------------------------------
def _dqn_inputs(tmp_path) -> dict:
    """The train_dqn wrapper's inputs of one preprocess run (vocabulary digest 'ours'): a fit graph file held out
    of the VGAE's and GAT's training file, which they record."""
    import json

    from kdgat.files import file_sha256
    from kdgat.model_store import save_model
    from kdgat.models import GAT, VGAE

    data = tmp_path / "data"
    save_graphs(toy_graphs(6, num_ids=20, seed=0), data / "train.pt", vocabulary="ours")
    save_graphs(toy_graphs(6, num_ids=20, seed=1), data / "val.pt", vocabulary="ours")
    (data / "metadata.json").write_text(json.dumps({"num_ids": 20, "vocabulary": {"digest": "ours"}}))
    trained = {"trained_on": file_sha256(data / "train.pt"), "vocabulary": "ours"}
    save_model(VGAE(20), "vgae", {"num_ids": 20}, data / "vgae.pt", **trained)
    save_model(GAT(20), "gat", {"num_ids": 20}, data / "gat.pt", **trained)
    return {
        "fit": data / "val.pt",
        "metadata": data / "metadata.json",
        "vgae": data / "vgae.pt",
        "gat": data / "gat.pt",
    }


def test_the_dqn_wrappers_refusal_of_graphs_it_must_not_learn_from_is_one_line_naming_both_files(
    tmp_path, capsys
):
    # kdgat.training.data's refusals of graph files (of another preprocess run, the base models' training graphs,
    # stop graphs that are the fit graphs) were plain ValueErrors: the train_dqn wrapper logged them as a bug,
    # with a traceback, and Snakemake showed that traceback.
    import shutil

    from kdgat.training.settings import StageSettings

    settings = StageSettings.from_config({"device": "cpu"}, "dqn", "teacher").as_dict()
    inputs = _dqn_inputs(tmp_path)
    copy = shutil.copyfile(inputs["fit"], tmp_path / "data" / "copy_of_val.pt")
    message = wrapper_refusal("train_dqn", tmp_path, capsys, {**inputs, "stop": copy}, {"settings": settings})
    assert message.startswith(
        f"{copy}: the stop graphs are the fit graphs {inputs['fit']}; give another split"
    )

    train = tmp_path / "data" / "train.pt"
    message = wrapper_refusal("train_dqn", tmp_path, capsys, {**inputs, "fit": train}, {"settings": settings})
    assert message.startswith(f"{train}: the fit graphs are the graphs vgae ({inputs['vgae']}) and gat")

    theirs = tmp_path / "data" / "theirs.pt"
    save_graphs(toy_graphs(6, num_ids=20, seed=2), theirs, vocabulary="theirs")
    message = wrapper_refusal(
        "train_dqn", tmp_path, capsys, {**inputs, "fit": theirs}, {"settings": settings}
    )
    assert message.startswith(
        f"{theirs} (fit) and {inputs['metadata']} (metadata) are of different preprocess runs"
    )


def test_a_vocab_json_given_as_metadata_is_refused_naming_it_and_the_metadata_json_expected(tmp_path, capsys):
    """vocab.json holds num_ids too: evaluate_baselines given it as input.metadata scored the graphs, with only a
    warning that the vocabulary digest could not be checked (and the training stages read it the same way)."""
    import json

    from kdgat.files import FileContentError
    from kdgat.graph_store import save_graph_sets

    data = tmp_path / "data"
    save_graphs(toy_graphs(8, num_ids=20, seed=0), data / "train.pt", vocabulary="ours", split="train")
    save_graphs(toy_graphs(6, num_ids=20, seed=1), data / "val.pt", vocabulary="ours", split="val")
    save_graph_sets(
        {"dos": toy_graphs(6, num_ids=20, seed=2)}, data / "test.pt", vocabulary="ours", split="test"
    )
    vocab = data / "vocab.json"
    vocab.write_text(
        json.dumps({"can_ids": {"0x316": 0}, "oov_index": 19, "num_ids": 20, "source": "frames"})
    )
    expected = (
        f"{vocab}: this is a preprocess vocab.json (CAN ID -> index), given as metadata; expected the preprocess "
        "run's metadata.json (dataset, num_ids, vocabulary digest, splits), written beside it"
    )
    inputs = {"train": data / "train.pt", "val": data / "val.pt", "test": data / "test.pt", "metadata": vocab}
    outputs = {"metrics": "baselines.json", "scores": "scores.csv"}
    assert wrapper_refusal("evaluate_baselines", tmp_path, capsys, inputs, {}, outputs=outputs) == expected
    with pytest.raises(FileContentError) as error:
        load_num_ids(vocab)  # every training stage's input.metadata
    assert str(error.value) == expected


def _run_time_mistake(tmp_path, mistake: str) -> tuple[str, dict, dict]:
    """(wrapper, inputs, params) of a training job that its run refuses after from_dict has read its settings."""
    from kdgat.training.settings import StageSettings

    dqn = StageSettings.from_config({"device": "cpu"}, "dqn", "teacher").as_dict()
    if mistake == "curriculum":  # train_gat's default settings draw the curriculum; no input.vgae
        never = tmp_path / "never_read"
        settings = StageSettings.from_config({"device": "cpu"}, "gat", "teacher").as_dict()
        return "train_gat", {"train": never, "val": never, "metadata": never}, {"settings": settings}
    inputs = _dqn_inputs(tmp_path)
    if mistake == "fit_split":  # input.fit is the base models' training graphs
        return "train_dqn", {**inputs, "fit": tmp_path / "data" / "train.pt"}, {"settings": dqn}
    if mistake == "keep_folds":  # the default 5 folds need 10 graphs; val.pt holds 6
        return "train_dqn", inputs, {"settings": dqn}
    return "train_dqn", inputs, {"settings": dqn, "tracking": {"backend": "wandb"}}  # tracking.backend


@pytest.mark.parametrize(
    ("mistake", "wrappers_words", "config_keys"),
    [
        ("curriculum", "the GAT curriculum (params.settings.curriculum.enabled) draws on the trained VGAE",
         "the GAT curriculum (kd_gat.curriculum.enabled) draws on the trained VGAE"),
        ("fit_split", "did not train on (input.fit: held-out graphs such as fusion.pt or val.pt, never train.pt)",
         "did not train on (kd_gat.dqn.fit_split: fusion or val, never train)"),
        ("keep_folds", "params.settings.dqn.keep_folds: 5 folds of the fit + stop graphs need at least 10 graphs",
         "kd_gat.dqn.keep_folds: 5 folds of the fit + stop graphs need at least 10 graphs"),
        ("tracking", "params.tracking.backend must be one of", "kd_gat.tracking.backend must be one of"),
    ],
)  # fmt: skip
def test_a_training_wrappers_run_time_refusals_name_its_params_and_the_kd_gat_modules_name_config_keys(
    tmp_path, capsys, mistake, wrappers_words, config_keys
):
    """hunt4's 'found, not fixed': a wrapper user's mistakes found while the job runs (a curriculum without its VGAE,
    fit graphs the base models trained on, too few graphs for keep_folds, a tracking backend misspelt) named the
    workflow's config keys (kd_gat.curriculum.enabled, kd_gat.dqn.fit_split, kd_gat.dqn.keep_folds,
    kd_gat.tracking.backend), which a wrapper user does not have. The kd_gat module passes SettingPrefix('kd_gat'):
    its user still reads the config keys."""
    wrapper, inputs, params = _run_time_mistake(tmp_path, mistake)
    message = wrapper_refusal(wrapper, tmp_path, capsys, inputs, params)
    assert wrappers_words in message and "kd_gat." not in message, message
    from kdgat.training.settings import SettingPrefix

    message = wrapper_refusal(
        wrapper, tmp_path, capsys, inputs, {**params, "setting_prefix": SettingPrefix("kd_gat")}
    )
    assert config_keys in message and "params." not in message, message


def test_cross_fitting_folds_too_few_graphs_name_keep_folds_as_the_caller_set_it():
    from kdgat.training.held_out import contiguous_folds
    from kdgat.training.settings import SettingsError, settings_named

    for prefix, key in (("params", "params.settings.dqn.keep_folds"), ("kd_gat", "kd_gat.dqn.keep_folds")):
        with pytest.raises(SettingsError) as error:
            settings_named(contiguous_folds)(7, 5, setting_prefix=prefix)
        assert str(error.value) == f"{key}: 5 folds need at least 10 graphs, got 7"


def test_a_setting_prefix_that_is_neither_kd_gat_nor_params_is_refused_naming_both():
    from kdgat.training.held_out import contiguous_folds
    from kdgat.training.settings import SettingsError, settings_named

    with pytest.raises(
        SettingsError, match=r"^setting_prefix must be 'kd_gat' \(messages name config keys\) or "
    ):
        settings_named(contiguous_folds)(12, 5, setting_prefix="config")


@pytest.mark.parametrize(
    ("stage", "argument", "value", "refusal"),
    [
        ("gat", "dropuot", 0.1, "unknown"),
        ("gat", "dropout", 1.5, ".dropout: expected a number in [0, 1), got 1.5"),
        ("vgae", "latent_dim", 0, ".latent_dim: expected an integer >= 1, got 0"),
        ("dqn", "hidden", 2.5, ".hidden: expected an integer >= 1, got 2.5"),
    ],
)
def test_model_arguments_of_a_training_wrappers_settings_are_refused_as_those_of_a_preset(
    tmp_path, capsys, stage, argument, value, refusal
):
    # A hand-written params.settings (StageSettings.from_dict) reached the model's constructor unchecked: torch's
    # traceback ("dropout probability has to be between 0 and 1", "unexpected keyword argument 'dropuot'"). The
    # same mistake in a preset of the config (the workflow's module and the kdgat command) was one line: now both
    # say the same, each naming where the arguments were given.
    from kdgat.presets import MODEL_ARGUMENTS
    from kdgat.training.settings import SettingsError, StageSettings

    if refusal == "unknown":
        refusal = f": unknown model arguments [{argument!r}]; known: {list(MODEL_ARGUMENTS[stage])}"
    settings = StageSettings.from_config({"device": "cpu"}, stage, "teacher").as_dict()
    settings["model"][argument] = value
    never = tmp_path / "never_read"
    graphs = {"fit": never, "vgae": never, "gat": never} if stage == "dqn" else {"train": never, "val": never}
    inputs = {**graphs, "metadata": never, **({"vgae": never} if stage == "gat" else {})}
    message = wrapper_refusal(f"train_{stage}", tmp_path, capsys, inputs, {"settings": settings})
    assert message == f"params.settings.model{refusal}"

    preset = {part: StageSettings.from_config({}, part, "teacher").model for part in ("vgae", "gat", "dqn")}
    preset[stage][argument] = value
    with pytest.raises(SettingsError) as error:
        StageSettings.from_config({"teacher_preset": "mine", "presets": {"mine": preset}}, stage, "teacher")
    assert str(error.value) == f"kd_gat.presets.mine.{stage}{refusal}"


@pytest.mark.parametrize("stage", list(TEACHERS_OF))
def test_a_training_run_without_one_of_its_outputs_is_an_input_error_naming_it(tmp_path, stage):
    """prepare_job refused a run() without one of its outputs with a plain ValueError: a direct caller (the
    wrappers check their rule's outputs first) got a traceback instead of the one line of an input error."""
    from kdgat.logs import failure_logged
    from kdgat.training.settings import StageSettings
    from kdgat.training.stage import prepare_job
    from wrapper_rules import InputError, InputRefused

    settings = StageSettings.from_config({"device": "cpu"}, stage, "teacher")
    outputs = {"model": str(tmp_path / "model.pt"), "metrics": str(tmp_path / "metrics.json"), "history": ""}
    with pytest.raises(InputRefused) as ended, failure_logged(f"train_{stage}"):
        prepare_job(settings, stage, outputs, None)
    assert isinstance(ended.value.error, InputError) and isinstance(ended.value.error, ValueError)
    assert str(ended.value) == (
        f"the {stage} stage needs the outputs ['model', 'metrics', 'history'], a path each (the train_{stage} "
        f"wrapper's output.<name>, kdgat.training.{stage}.run's outputs[<name>]); missing ['history']"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("stage", "change", "refusal", "config", "config_refusal"),
    [
        (
            "vgae",
            {"training": {"epochs": 0}},
            "params.settings.training: epochs must be >= 1, got 0",
            {"training": {"vgae": {"epochs": 0}}},
            "kd_gat.training: epochs must be >= 1, got 0",
        ),
        (
            "dqn",
            {"dqn": {"gamma": 2.0}},
            "params.settings.dqn.gamma must lie in [0, 1], got 2.0",
            {"dqn": {"gamma": 2.0}},
            "kd_gat.dqn.gamma must lie in [0, 1], got 2.0",
        ),
        (
            "gat",
            {"curriculum": {"end_ratio": 0.0}},
            "params.settings.curriculum.end_ratio must be a finite number > 0, got 0.0",
            {"curriculum": {"end_ratio": 0.0}},
            "kd_gat.curriculum.end_ratio must be a finite number > 0, got 0.0",
        ),
        (
            "vgae",
            {"loss": {"kl_weight": -1.0}},
            "params.settings.loss.kl_weight must be >= 0, got -1.0",
            {"vgae_loss": {"kl_weight": -1.0}},
            "kd_gat.vgae_loss.kl_weight must be >= 0, got -1.0",
        ),
        (
            "gat",
            {"seed": -1},
            "params.settings.seed must be an integer in [0, 2**32 - 1], got -1",
            {"seed": -1},
            "kd_gat.seed (the workflow sets it from kd_gat.seeds) must be an integer in [0, 2**32 - 1], got -1",
        ),
    ],
)
def test_a_training_wrappers_hand_written_settings_are_refused_naming_params_settings_not_config_keys(
    tmp_path, capsys, stage, change, refusal, config, config_refusal
):
    # A wrapper user's params.settings out of range was refused naming kd_gat.training, kd_gat.dqn.gamma,
    # kd_gat.seed (the workflow sets it from kd_gat.seeds): config keys of a workflow the user does not run.
    from kdgat.training.settings import SettingsError, StageSettings

    settings = StageSettings.from_config({"device": "cpu"}, stage, "teacher").as_dict()
    for key, value in change.items():
        settings[key] = {**settings[key], **value} if isinstance(value, dict) else value
    never = tmp_path / "never_read"
    graphs = {"fit": never, "vgae": never, "gat": never} if stage == "dqn" else {"train": never, "val": never}
    inputs = {**graphs, "metadata": never, **({"vgae": never} if stage == "gat" else {})}
    message = wrapper_refusal(f"train_{stage}", tmp_path, capsys, inputs, {"settings": settings})
    assert message == refusal
    # the same mistake in the workflow's config is still named by its config key
    with pytest.raises(SettingsError) as error:
        StageSettings.from_config(config, stage, "teacher")
    assert str(error.value) == config_refusal


@pytest.mark.parametrize("seed", ["one", 1.5, True])
def test_evaluate_detector_refuses_a_seed_that_is_no_integer_before_it_scores(tmp_path, capsys, seed):
    # params.seed="one" was written into metrics.json, and only summarize_evaluation, after every evaluation had
    # run, refused the file ("seed 'one' must be an integer"). The inputs are never read: refused first.
    from kdgat.evaluation.inputs import checked_metrics

    never = tmp_path / "never_read"
    inputs = dict.fromkeys(("vgae", "gat", "dqn", "val", "test"), never)
    params = {"dataset": "d", "variant": "teacher", "seed": seed, "device": "cpu"}
    outputs = {name: f"{name}.{suffix}" for name, suffix in
               (("metrics", "json"), ("scores", "parquet"), ("roc", "svg"), ("pr", "svg"), ("confusion", "svg"))}  # fmt: skip
    message = wrapper_refusal("evaluate_detector", tmp_path, capsys, inputs, params, outputs)
    assert message == (
        "params.seed must be an integer (the training seed of the models, recorded in metrics.json) or absent; "
        f"got {type(seed).__name__} {seed!r}"
    )
    # the summary's check of a metrics.json holds the same rule
    with pytest.raises(ValueError, match="must be an integer"):
        checked_metrics("metrics.json", {"variant": "teacher", "seed": seed})


def test_a_text_file_given_as_graphs_is_one_line_naming_it_without_torchs_advice_on_weights_only(tmp_path):
    # metadata.json given as a training wrapper's input.val: the "one line" of the failure was twelve, torch's
    # page on the weights_only default ending "Please file an issue ...", with the reason buried in it.
    from kdgat.files import FileContentError

    path = write(tmp_path, "metadata.json", '{"num_ids": 26}')
    with pytest.raises(FileContentError) as error:
        load_graphs(path)
    message = str(error.value)
    assert message == (
        f"{path}: not a readable kdgat graph file (a 'kdgat-graphs/1' file of the preprocess step; rebuild it) "
        "(UnpicklingError: Unsupported operand 123)"
    )


def test_a_text_file_given_as_graphs_has_its_reason_named_also_where_only_its_header_is_read(tmp_path):
    # The vocabulary and split checks read a graph file's header memory-mapped; torch maps only its zip format
    # and refused a JSON with advice to torch.save the file with _use_new_zipfile_serialization, not the reason.
    from kdgat.files import FileContentError
    from kdgat.graph_store import graph_split

    path = write(tmp_path, "metadata.json", '{"num_ids": 26}')
    with pytest.raises(FileContentError) as error:
        graph_split(path)
    message = str(error.value)
    assert (
        message.startswith(f"{path}: not a readable kdgat graph file")
        and "Unsupported operand 123" in message
    )
    assert "zipfile" not in message and "mmap" not in message


def test_a_dataset_path_or_log_with_a_tilde_is_read_from_the_home_folder(tmp_path, monkeypatch):
    # "~/data/can" was looked up as a folder named "~" in the working directory ("does not exist", where the
    # folder is there), and a files entry reached Snakemake, which refuses "~" naming no config key.
    for folder in ("train_01_x", "test_01_dos"):
        (tmp_path / "can" / folder).mkdir(parents=True)
        write(tmp_path / "can" / folder, "log.csv", HCRL_ROWS)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path / "can")  # no ~ folder here either
    train, test, _ = dataset_logs("lab", {"path": "~/can"}, held_out=())
    assert train == [str(tmp_path / "can/train_01_x/log.csv")]
    assert test == {"dos": [str(tmp_path / "can/test_01_dos/log.csv")]}
    files = {"train": ["~/can/train_01_x/log.csv"], "test": {"dos": ["~//can/./test_01_dos/log.csv"]}}
    assert dataset_logs("lab", {"files": files}, held_out=())[:2] == (train, test)


def test_a_relative_dataset_path_that_does_not_exist_names_the_working_directory(tmp_path, monkeypatch):
    # With snakemake --directory elsewhere, "../data/can does not exist" left the user to guess where from.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        LayoutError,
        match=rf"^datasets.lab.path: dataset directory \.\./no/can does not exist \(relative to the working "
        rf"directory {re.escape(str(tmp_path))}\) \(expected",
    ):
        dataset_logs("lab", {"path": "../no/can"})
