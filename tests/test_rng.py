"""The named-stream registry: every draw has a name, and no two consumers share a stream unnoticed."""
import ast
from pathlib import Path

import numpy as np
import pytest

from snrmoe_lib._util.rng import KNOWN_SHARED, STREAMS, Stream, entropy, overlaps, rng, shared_pairs

PKG = Path(__file__).resolve().parents[1] / "snrmoe_lib"


def test_no_new_shared_streams():
    shared = shared_pairs()
    new = sorted(tuple(sorted(p)) for p in shared - set(KNOWN_SHARED))
    assert not new, f"these streams can draw the same numbers; give one a fresh salt: {new}"
    stale = sorted(tuple(sorted(p)) for p in set(KNOWN_SHARED) - shared)
    assert not stale, f"KNOWN_SHARED lists pairs that no longer overlap; remove them: {stale}"


def test_overlap_rule():
    a = Stream("a", ("seed", 7), "")
    assert overlaps(a, Stream("b", ("seed", "row"), ""))
    assert not overlaps(a, Stream("c", ("seed", 8), ""))
    assert not overlaps(a, Stream("d", ("seed", 7, "k"), ""))
    assert not overlaps(Stream("e", ("seed",), ""), Stream("f", ("seed",), "", family="torch"))


def test_layouts_reproduce_the_plain_draws():
    assert entropy("noise.flux", 3, 5) == (3, 5)
    assert entropy("audit.label_shuffle", 2, 4) == (2, 101, 4)
    assert entropy("bootstrap.seeds", 1) == (1, 9001, 9002)
    assert entropy("bootstrap.stars", 4) == 4
    np.testing.assert_array_equal(rng("noise.flux", 3, 5).standard_normal(6),
                                  np.random.default_rng((3, 5)).standard_normal(6))


def test_unknown_stream_and_wrong_keys_are_named():
    with pytest.raises(KeyError, match="unknown random stream 'nope'"):
        rng("nope", 0)
    with pytest.raises(TypeError, match="takes keys"):
        rng("noise.flux", 0)


def test_every_draw_in_the_package_goes_through_the_registry():
    """No module but the registry itself builds a generator from a raw seed."""
    offenders = []
    for path in PKG.rglob("*.py"):
        if path.name == "rng.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr in ("default_rng", "manual_seed", "RandomState", "SeedSequence"):
                offenders.append(f"{path.relative_to(PKG)}:{node.lineno}")
    assert not offenders, f"random draws outside snrmoe_lib._util.rng: {offenders}"


def test_every_stream_is_used():
    names = set()
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in (
                    "rng", "_rng", "torch_generator", "entropy") and node.args and isinstance(node.args[0], ast.Constant):
                names.add(node.args[0].value)
    unused = sorted(set(STREAMS) - names)
    assert not unused, f"registered streams nobody draws from: {unused}"
