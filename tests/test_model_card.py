"""The model card is checked against its ONNX graphs (issue 10, item 5): an edited card (a size, a statistic,
a name, a missing field) fails at load with one ModelCardError line that names the field and says to re-export.

A tiny real policy is exported once for the module; the pure check (check_card_against_graph) is also driven
by hypothesis on plain dicts: valid cards pass, any single corruption of one is refused.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

os.environ["HF_HUB_OFFLINE"] = "1"

from lapa_models.policy.runtime import (GRAPHS, MAX_CONTROL_RATE_HZ, MAX_STAT_MAGNITUDE,  # noqa: E402
                                        ModelCardError, PolicyRuntime, check_card_against_graph, load_card,
                                        read_graph_signature)


# ============================================================================ a real export
@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A tiny LapaPolicy (random weights, real architecture, 4 actions, 4 state values) exported in fp32."""
    import torch

    from lapa_models.policy.configuration import get_config
    from lapa_models.policy.export import export_policy
    from lapa_models.policy.modeling import LapaPolicy
    from lapa_models.policy.normalization import NormalizationStats

    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    config = get_config("tiny").replace(latent_head=False, action_names=["vx", "vy", "vz", "gripper"],
                                        state_names=["ee_x", "ee_y", "ee_z", "gripper"], control_rate_hz=20.0)
    stats = NormalizationStats.from_data(rng.uniform(-0.3, 0.3, (200, 4)), rng.uniform(0.0, 1.0, (200, 4)))
    out = tmp_path_factory.mktemp("card") / "policy"
    export_policy(LapaPolicy(config, stats).eval(), out, precisions=("fp32",))
    return out


def _edited(exported: Path, tmp_path: Path, edit) -> Path:
    target = tmp_path / "export"
    shutil.copytree(exported, target)
    card = json.loads((target / "model_card.json").read_text())
    edit(card)
    (target / "model_card.json").write_text(json.dumps(card))   # NaN and inf as JSON's NaN / Infinity
    return target


def _set(path: str, value):
    """An edit that sets card[a][b]... (dotted path, list indices as numbers) to ``value``."""
    def edit(card):
        *keys, last = [int(k) if k.isdigit() else k for k in path.split(".")]
        for k in keys:
            card = card[k]
        card[last] = value(card[last]) if callable(value) else value
    return edit


def _delete(path: str):
    def edit(card):
        *keys, last = path.split(".")
        for k in keys:
            card = card[k]
        del card[last]
    return edit


def _consistent_action_dim(card):
    """action.dim 5 everywhere in the card (names, statistics, graph section): only the graph disagrees."""
    card["action"]["dim"] = 5
    card["action"]["names"].append("extra")
    card["graphs"]["policy"]["outputs"][0]["shape"][2] = 5
    for key, values in card["normalization"].items():
        if key.startswith("action_") or key == "bin_edges":
            values.append(values[-1])


CASES = {
    "action dim": (_set("action.dim", 5), r"action\.dim is 5 in the model card but 4 in the graph .*policy\.onnx"),
    "action dim, consistent card": (_consistent_action_dim,
                                    r"graphs\.policy\.outputs 'actions' has shape \['batch', 4, 4\] in the graph "
                                    r"but \['batch', 4, 5\] in the model card"),
    "chunk size": (_set("action.chunk_size", 8), r"action\.chunk_size is 8 in the model card but 4"),
    "embedding size": (_set("instruction.embedding_dim", 64), r"instruction\.embedding_dim is 64 in the model card "
                                                               r"but 32 in the graph .*instruction_encoder\.onnx"),
    "embedding size, graph section": (_set("graphs.policy.inputs.1.shape.1", 64),
                                      r"graphs\.policy\.inputs 'instruction_embedding' has shape \['batch', 32\]"),
    "image size": (_set("image.model_size", [64, 64]), r"image\.model_size is \[64, 64\] in the model card but "
                                                       r"\[32, 32\] in the graph .*Resize"),
    "image channels": (_set("graphs.policy.inputs.0.shape.3", 4), r"graphs\.policy\.inputs 'image' has shape"),
    "state size": (_set("state.dim", 6), r"state\.dim is 6 in the model card but 4"),
    "state dropped": (_set("state", None), r"state\.dim is None in the model card but 4"),
    "renamed input": (_set("graphs.policy.inputs.1.name", "text_embedding"),
                      r"do not match the model card's graphs\.policy\.inputs"),
    "input dtype": (_set("graphs.policy.inputs.0.dtype", "float32"),
                    r"do not match the model card's graphs\.policy\.inputs"),
    "NaN statistic": (_set("normalization.action_std.1", float("nan")),
                      r"normalization\.action_std\[1\] is nan, expected a finite number"),
    "1e30 statistic": (_set("normalization.action_mean.0", 1e30), r"normalization\.action_mean\[0\] is 1e\+30"),
    "infinite statistic": (_set("normalization.state_max.3", float("inf")), r"normalization\.state_max\[3\] is inf"),
    "negative std": (_set("normalization.state_std.2", -0.1), r"normalization\.state_std\[2\] is -0\.1, expected > 0"),
    "zero std": (_set("normalization.action_std.0", 0.0), r"normalization\.action_std\[0\] is 0, expected > 0"),
    "min above max": (_set("normalization.action_min.3", 5.0), r"normalization\.action_min\[3\] is 5, expected <="),
    "mean outside range": (_set("normalization.state_mean.0", 2.0), r"normalization\.state_mean\[0\] is 2, expected "
                                                                    r"within"),
    "wrong-length statistic": (_set("normalization.action_max", lambda v: v[:3]),
                               r"normalization\.action_max has shape \[3\], expected \[4\]"),
    "missing statistic": (_delete("normalization.state_std"), r"normalization\.state_std is missing"),
    "missing field": (_delete("action.chunk_size"), r"action\.chunk_size is missing"),
    "wrong type": (_set("instruction.embedding_dim", "32"), r"instruction\.embedding_dim is '32', expected a positive"),
    "action names count": (_set("action.names", lambda v: v[:3]), r"action\.names is .*expected null or a list of 4"),
    "state names count": (_set("state.names", lambda v: v + ["extra"]), r"state\.names is .*list of 4 names"),
    "control rate zero": (_set("action.control_rate_hz", 0), r"action\.control_rate_hz is 0, expected"),
    "control rate NaN": (_set("action.control_rate_hz", float("nan")), r"action\.control_rate_hz is nan"),
    "control rate text": (_set("action.control_rate_hz", "20"), r"action\.control_rate_hz is '20'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_edited_model_card_fails_to_load_naming_the_field(exported, tmp_path, case):
    edit, message = CASES[case]
    target = _edited(exported, tmp_path, edit)
    with pytest.raises(ModelCardError, match=message) as error:
        PolicyRuntime(target, providers=("cpu",), warmup=0)
    text = str(error.value)
    assert "\n" not in text and "re-export the policy" in text, text


def test_the_graph_checks_run_without_hashes_and_an_intact_export_loads(exported, tmp_path):
    """verify_hashes=False skips the sha256 of the files, never the card-against-graph checks (the card is not
    hashed, so an edited card keeps every hash valid)."""
    assert load_card(exported)["action"]["dim"] == 4
    target = _edited(exported, tmp_path, _set("action.chunk_size", 16))
    for verify_hashes in (True, False):
        with pytest.raises(ModelCardError, match=r"action\.chunk_size is 16"):
            load_card(target, verify_hashes=verify_hashes)
        with pytest.raises(ModelCardError, match=r"action\.chunk_size is 16"):
            PolicyRuntime(target, providers=("cpu",), warmup=0, verify_hashes=verify_hashes)


def test_graph_signature_is_read_from_the_onnx_file(exported):
    card = json.loads((exported / "model_card.json").read_text())
    graphs = {g: read_graph_signature(exported / card["graphs"][g]["files"]["fp32"]) for g in GRAPHS}
    assert graphs["policy"]["image_size"] == [32, 32]
    assert [(t["name"], t["dtype"], t["shape"][1:]) for t in graphs["policy"]["inputs"]] == [
        ("image", "uint8", ["height", "width", 3]), ("instruction_embedding", "float32", [32]),
        ("state", "float32", [4])]
    assert [t["shape"][1:] for t in graphs["policy"]["outputs"]] == [[4, 4]]
    check_card_against_graph(card, graphs)
    card["action"]["chunk_size"] = 5
    with pytest.raises(ModelCardError, match=r"action\.chunk_size is 5"):
        check_card_against_graph(card, graphs)


# ============================================================================ the pure check, property-based
DYNAMIC = st.sampled_from(["batch", "N", None])      # how a graph may name a dynamic dimension
finite = st.floats(-1e5, 1e5, allow_nan=False)


@st.composite
def _vector_stats(draw, dim: int):
    """mean/std/min/max (and quantiles) as export writes them: min <= mean <= max, std > 0."""
    lo = draw(st.lists(finite, min_size=dim, max_size=dim))
    span = draw(st.lists(st.floats(0, 1e5), min_size=dim, max_size=dim))
    frac = draw(st.lists(st.floats(0, 1), min_size=dim, max_size=dim))
    std = draw(st.lists(st.floats(1e-3, 1e5), min_size=dim, max_size=dim))
    hi = [a + s for a, s in zip(lo, span)]
    return {"mean": [a + s * f for a, s, f in zip(lo, span, frac)], "std": std, "min": lo, "max": hi}


@st.composite
def valid_cards(draw, image_size_known: bool = False):
    """(card, graph signatures) that agree: the shape of export.build_card's card, random sizes and statistics."""
    a, h, e, s = (draw(st.integers(1, n)) for n in (12, 16, 1024, 10))
    s = draw(st.sampled_from([0, s]))
    side = draw(st.tuples(st.integers(8, 512), st.integers(8, 512)))
    head = draw(st.sampled_from(["continuous", "bins"]))
    num_bins = draw(st.integers(1, 8))
    precisions = draw(st.sampled_from([["fp32"], ["fp16"], ["fp32", "fp16"]]))
    b = draw(DYNAMIC)
    policy_in = [("image", "uint8", ["batch", "height", "width", 3], [b, draw(DYNAMIC), draw(DYNAMIC), 3]),
                 ("instruction_embedding", "float32", ["batch", e], [b, e])]
    policy_in += [("state", "float32", ["batch", s], [b, s])] if s else []
    spec = {"instruction_encoder": ([("input_ids", "int64", ["batch", "tokens"], [b, draw(DYNAMIC)]),
                                     ("attention_mask", "int64", ["batch", "tokens"], [b, "tokens"])],
                                    [("instruction_embedding", "float32", ["batch", e], [b, e])]),
            "policy": (policy_in, [("actions", "float32", ["batch", h, a], [b, h, a])])}
    action = draw(_vector_stats(a))
    edges = [sorted(np.linspace(lo, hi, num_bins + 1).tolist()) for lo, hi in zip(action["min"], action["max"])]
    normalization = {"num_samples": 100, **{f"action_{k}": v for k, v in action.items()},
                     "action_q01": action["min"], "action_q99": action["max"], "bin_edges": edges}
    if s:
        normalization.update({f"state_{k}": v for k, v in draw(_vector_stats(s)).items()})
    tensors = lambda ts, i: [{"name": n, "dtype": d, "shape": list(t[i])} for n, d, *t in ts]  # noqa: E731
    card = {
        "format": "lapa-policy-onnx", "version": 1, "precisions": precisions,
        "graphs": {g: {"files": {p: f"{g}{'' if p == 'fp32' else '_fp16'}.onnx" for p in precisions},
                       "inputs": tensors(ins, 0), "outputs": tensors(outs, 0)} for g, (ins, outs) in spec.items()},
        "files": {f"{g}.onnx": {"sha256": "0" * 64, "bytes": 1} for g in GRAPHS},
        "image": {"model_size": list(side), "channels": "RGB", "dtype": "uint8"},
        "instruction": {"tokenizer": "tokenizer.json", "max_tokens": draw(st.integers(1, 512)), "embedding_dim": e},
        "action": {"names": draw(st.sampled_from([None, [f"a{i}" for i in range(a)]])), "dim": a, "chunk_size": h,
                   "head": head, "num_bins": num_bins if head == "bins" else None,
                   "control_rate_hz": draw(st.one_of(st.none(), st.floats(1e-3, MAX_CONTROL_RATE_HZ)))},
        "state": {"names": draw(st.sampled_from([None, [f"s{i}" for i in range(s)]])), "dim": s} if s else None,
        "normalization": normalization,
    }
    image_size = list(side) if image_size_known or draw(st.booleans()) else None
    graphs = {g: {"file": f"{g}.onnx", "inputs": tensors(ins, 1), "outputs": tensors(outs, 1),
                  "image_size": image_size if g == "policy" else None} for g, (ins, outs) in spec.items()}
    return card, graphs


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_cards())
def test_random_valid_cards_pass(card_and_graphs):
    check_card_against_graph(*card_and_graphs)


# ---------------------------------------------------------------- single corruptions of a valid card
def _get(card, path):
    for k in path:
        card = card[k]
    return card


def _put(card, path, value):
    _get(card, path[:-1])[path[-1]] = value


def _stat_paths(card):
    kinds = ["action"] + (["state"] if card["state"] else [])
    return [("normalization", f"{k}_{s}") for k in kinds for s in ("mean", "std", "min", "max")]


def _restated_dim(card, graphs, draw):
    paths = [("action", "dim"), ("action", "chunk_size"), ("instruction", "embedding_dim"), ("image", "model_size", 0),
             ("image", "model_size", 1)] + ([("state", "dim")] if card["state"] else [])
    path = draw(st.sampled_from(paths))
    _put(card, path, draw(st.integers(1, 4096).filter(lambda v: v != _get(card, path))))


def _graph_section(card, graphs, draw):
    """A fixed dimension, a name, a dtype or a rank of one tensor in the card's graph section."""
    g, kind = draw(st.sampled_from(GRAPHS)), draw(st.sampled_from(["inputs", "outputs"]))
    tensor = draw(st.sampled_from(card["graphs"][g][kind]))
    fixed = [i for i, d in enumerate(tensor["shape"]) if isinstance(d, int)]
    what = draw(st.sampled_from(["name", "dtype", "rank"] + (["dim", "dynamic"] if fixed else [])))
    if what == "name":
        tensor["name"] += "_renamed"
    elif what == "dtype":
        tensor["dtype"] = draw(st.sampled_from(["float32", "float16", "int64", "uint8"]).filter(
            lambda d: d != tensor["dtype"]))
    elif what == "rank":
        tensor["shape"] = draw(st.sampled_from([tensor["shape"] + [1], tensor["shape"][:-1]]))
    else:
        i = draw(st.sampled_from(fixed))
        tensor["shape"][i] = "dynamic" if what == "dynamic" else draw(
            st.integers(1, 4096).filter(lambda v: v != tensor["shape"][i]))


def _bad_value(card, graphs, draw):
    path = draw(st.sampled_from(_stat_paths(card)))
    values = _get(card, path)
    bad = [float("nan"), float("inf"), -float("inf"), 1e30, -1e30, MAX_STAT_MAGNITUDE * 2]
    bad += [0.0, -1.0, -1e-9] if path[1].endswith("std") else []
    values[draw(st.integers(0, len(values) - 1))] = draw(st.sampled_from(bad))


def _bad_length(card, graphs, draw):
    path = draw(st.sampled_from(_stat_paths(card) + [("normalization", "bin_edges")]))
    values = _get(card, path)
    _put(card, path, draw(st.sampled_from([values[:-1], values + values[-1:]])))


def _bad_order(card, graphs, draw):
    """min > max, or mean outside [min, max], or a bin edge out of order."""
    n = card["normalization"]
    what = draw(st.sampled_from(["action_min", "action_mean", "bin_edges"] +
                                (["state_min", "state_mean"] if card["state"] else [])))
    i = draw(st.integers(0, len(n[what]) - 1))
    if what == "bin_edges":
        n[what][i][0] = n[what][i][-1] + 1.0
    else:
        hi = n[what.replace("min", "max").replace("mean", "max")][i]
        n[what][i] = hi + max(1.0, abs(hi) * 1e-3)


def _bad_names(card, graphs, draw):
    section = draw(st.sampled_from(["action"] + (["state"] if card["state"] else [])))
    dim = card[section]["dim"]
    card[section]["names"] = [f"n{i}" for i in range(draw(st.integers(0, 20).filter(lambda k: k != dim)))]


def _bad_rate(card, graphs, draw):
    card["action"]["control_rate_hz"] = draw(st.sampled_from(
        [0, -20.0, float("nan"), float("inf"), MAX_CONTROL_RATE_HZ * 2, "20", True, [20.0]]))


# Required fields and wrong-typed values for each (none of them valid there).
REQUIRED = {
    ("precisions",): [[], ["fp64"], "fp32", None],
    ("files",): [[], None, {"policy.onnx": {"sha256": 1}}],
    ("graphs", "policy", "inputs"): [[], None, [{"name": "image"}]],
    ("graphs", "instruction_encoder", "outputs"): [[], "instruction_embedding"],
    ("graphs", "policy", "files"): [{}, None, "policy.onnx"],
    ("image", "model_size"): [[32], [32, 32, 32], [0, 32], ["32", 32], None, 32],
    ("instruction", "embedding_dim"): ["32", 32.0, True, 0, -1, None],
    ("instruction", "max_tokens"): ["32", 0, None],
    ("instruction", "tokenizer"): [5, "", None],
    ("action", "dim"): ["4", 4.0, True, 0, None],
    ("action", "chunk_size"): ["4", 0, -3, None],
    ("action", "head"): ["mlp", None],
    ("normalization", "action_mean"): [None, "0", [[0.0]], {}],
    ("normalization", "action_std"): [None, [None]],
}


def _missing_or_wrong_type(card, graphs, draw):
    path = draw(st.sampled_from(sorted(REQUIRED)))
    if draw(st.booleans()):
        del _get(card, path[:-1])[path[-1]]
    else:
        _put(card, path, draw(st.sampled_from(REQUIRED[path])))


def _state_mismatch(card, graphs, draw):
    """The card drops the state section of a policy that takes state, or adds one to a policy that does not."""
    card["state"] = None if card["state"] else {"dim": 3, "names": None}
    if card["state"]:
        card["normalization"].update({f"state_{k}": [1.0] * 3 for k in ("mean", "std", "min", "max")})


CORRUPTIONS = [_restated_dim, _graph_section, _bad_value, _bad_length, _bad_order, _bad_names, _bad_rate,
               _missing_or_wrong_type, _state_mismatch]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_cards(image_size_known=True), st.sampled_from(CORRUPTIONS), st.data())
def test_any_single_corruption_of_a_valid_card_is_refused(card_and_graphs, corrupt, data):
    card, graphs = card_and_graphs
    corrupt(card, graphs, data.draw)
    with pytest.raises(ModelCardError) as error:
        check_card_against_graph(card, graphs)
    text = str(error.value)
    assert "\n" not in text and "re-export the policy" in text, text
