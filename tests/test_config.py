import pytest

from snrmoe_lib.config import ParameterError, load_params, params_from_dict

from conftest import ROOT


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "params").glob("*.yaml")))
def test_shipped_configurations_are_valid(name):
    p = load_params(ROOT / "params" / name)
    assert p.name
    assert p.dataset_path.is_absolute()


def test_unknown_key_is_named():
    with pytest.raises(ParameterError, match=r"split\.n_trian"):
        params_from_dict({"split": {"n_trian": 5}})
    with pytest.raises(ParameterError, match=r"nosie"):
        params_from_dict({"nosie": {}})


def test_wrong_type_is_named():
    with pytest.raises(ParameterError, match=r"split\.n_train: expected an integer"):
        params_from_dict({"split": {"n_train": "many"}})
    with pytest.raises(ParameterError, match=r"noise\.noise_level: expected a number"):
        params_from_dict({"noise": {"noise_level": [1]}})
    with pytest.raises(ParameterError, match=r"snr_bins\.definition"):
        params_from_dict({"snr_bins": {"definition": "median"}})


def test_value_checks():
    with pytest.raises(ParameterError, match="strictly increasing"):
        params_from_dict({"snr_bins": {"edges": [4.0, 2.0], "labels": ["a", "b", "c"]}})
    with pytest.raises(ParameterError, match="labels"):
        params_from_dict({"snr_bins": {"edges": [2.0, 4.0], "labels": ["a", "b"]}})
    with pytest.raises(ParameterError, match=r"mock\.teff"):
        params_from_dict({"data": {"mock": {"teff": [6000.0, 4000.0]}}})
    with pytest.raises(ParameterError, match="noise"):
        params_from_dict({"noise": {"noise_level": 0}})


def test_numeric_strings_and_ints_become_floats():
    p = params_from_dict({"ridge": {"alphas": [1, "1e5"]}, "noise": {"noise_level": 1}})
    assert p.ridge.alphas == [1.0, 1e5]
    assert isinstance(p.noise.noise_level, float)


def test_paths_resolve_against_the_yaml_folder(tmp_path):
    f = tmp_path / "cfg" / "x.yaml"
    f.parent.mkdir()
    f.write_text("name: x\ndata:\n  path: ../data/d.h5\n")
    p = load_params(f)
    assert p.dataset_path == (tmp_path / "data" / "d.h5").resolve()


def test_overrides_are_validated(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("name: x\n")
    assert load_params(f, overrides={"split": {"n_train": 7}}).split.n_train == 7
    with pytest.raises(ParameterError, match="bogus"):
        load_params(f, overrides={"split": {"bogus": 7}})


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_params(tmp_path / "nope.yaml")
    f = tmp_path / "bad.yaml"
    f.write_text("a: [1, 2\n")
    with pytest.raises(ParameterError, match="not valid YAML"):
        load_params(f)


def test_a_section_built_in_code_is_validated():
    from snrmoe_lib.config import GateSpec, MockSpec, Params

    with pytest.raises(ParameterError, match=r"gate\.tau"):
        GateSpec(tau=5)
    with pytest.raises(ParameterError, match=r"gate\.tau: expected a number"):
        GateSpec(tau="high")
    with pytest.raises(ParameterError, match=r"data\.mock\.n: must be positive"):
        MockSpec(n=0)
    with pytest.raises(ParameterError, match=r"seeds"):
        Params(seeds=[])
    assert MockSpec(teff=[4000, 5000]).teff == [4000.0, 5000.0]  # the same conversion as from YAML


def test_registry_names_are_checked_at_load():
    with pytest.raises(ParameterError, match=r"quality\.chosen: 'S9'.*allowed: auto, S0"):
        params_from_dict({"quality": {"chosen": "S9"}})
    with pytest.raises(ParameterError, match=r"quality\.representations\[1\]: 'S5'"):
        params_from_dict({"quality": {"representations": ["S0", "S5"]}})
    with pytest.raises(ParameterError, match=r"gate\.representation: 'S7'.*allowed: S0"):
        params_from_dict({"gate": {"representation": "S7"}})
    with pytest.raises(ParameterError, match=r"data\.mock\.model: 'bosz'.*allowed: calibrated, simple"):
        params_from_dict({"data": {"mock": {"model": "bosz"}}})


def test_registry_name_lists_match_the_registries():
    from snrmoe_lib.config import MOCK_MODELS, REPRESENTATION_NAMES
    from snrmoe_lib.data.mock.registry import model_names
    from snrmoe_lib.features.quality import REPRESENTATIONS

    assert tuple(REPRESENTATIONS) == REPRESENTATION_NAMES
    assert set(model_names()) == set(MOCK_MODELS)


def test_min_seeds_is_checked_and_read_by_q1():
    import pandas as pd

    from snrmoe_lib.analyses.q1 import Q1CheckError, check_consistency

    with pytest.raises(ParameterError, match=r"runner\.min_seeds"):
        params_from_dict({"runner": {"min_seeds": 0}})
    empty = pd.DataFrame(columns=["r2", "mae", "rmse"])
    with pytest.raises(Q1CheckError, match=r"at least 3 noise seeds \(runner\.min_seeds\)"):
        check_consistency(params_from_dict({"seeds": [0]}), {}, {}, empty, 0)
    # a configuration that says it runs one seed (params/gates_1m.yaml) passes this check
    check_consistency(params_from_dict({"seeds": [0], "runner": {"min_seeds": 1}}), {}, {}, empty, 0)
    one = load_params(ROOT / "params" / "gates_1m.yaml")
    assert one.seeds == [0] and one.runner.min_seeds == 1 and one.controls.curve_sizes[-1] < one.split.n_train
