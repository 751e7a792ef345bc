"""`lapa benchmark`: the quick preset end to end on tasks the catalogue does not ship (renamed tasks with
new instructions, from a catalogue file of the test's own), result files checked for shape; resuming;
bad input (unknown task, task without an expert, K above the demo pool, another configuration's folder)."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("MUJOCO_GL", "egl")
pytestmark = pytest.mark.timeout(1800)   # the quick preset runs ~70 steps end to end

# Tasks under names and instructions that appear nowhere in the project: the pipeline may not key on names.
CATALOGUE = {
    "defaults": {"camera": {"lookat": [0.0, 0.65, 0.1], "distance": 1.2, "azimuth": 135.0, "elevation": -30.0,
                            "fovy": 45.0}, "max_steps": 60},
    "views": {"dusk": {"camera": {"azimuth": 150.0}, "light": {"ambient": [0.1, 0.1, 0.2], "scale": 0.5}}},
    "tasks": {
        "shut-the-box": {"env": "drawer-close-v3", "expert": "SawyerDrawerCloseV3Policy",
                         "instructions": ["shove the box shut", "make the box closed"]},
        "touch-marker": {"env": "reach-v3", "expert": "SawyerReachV3Policy",
                         "instructions": ["go touch the marker"]},
        "tap-switch": {"env": "button-press-topdown-v3", "expert": "SawyerButtonPressTopdownV3Policy",
                       "instructions": ["tap the switch from above"]},
        "swing-shut": {"env": "door-close-v3", "expert": "SawyerDoorCloseV3Policy",
                       "instructions": ["swing the hatch shut"]},
        "no-expert": {"env": "door-open-v3", "instructions": ["open it somehow"]},
    },
}
TASK_ARGS = ["--targets", "shut-the-box,touch-marker", "--video-only", "tap-switch", "--held-out", "swing-shut",
             "--set", "view=dusk"]


def _lapa(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "lapa_ros.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "MUJOCO_GL": "egl"})


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    path = tmp_path_factory.mktemp("catalogue") / "tasks.yaml"
    path.write_text(yaml.safe_dump(CATALOGUE))
    return path


@pytest.fixture(scope="module")
def quick(catalogue, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "quick"
    result = _lapa("benchmark", "--preset", "quick", "--catalogue", catalogue, "--out", out, *TASK_ARGS)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_quick_preset_writes_tables_plot_and_per_cell_results(quick):
    out, result = quick
    results = json.loads((out / "results" / "results.json").read_text())
    config = results["config"]
    assert config["targets"] == ["shut-the-box", "touch-marker"] and config["preset"] == "quick+changes"
    for k in map(str, config["shots"]):
        summary = results["in_domain"][k]
        assert set(summary["arms"]) == {"scratch", "lapa", "action"}
        for arm in summary["arms"].values():
            assert 0 <= arm["ci"][0] <= arm["success"] <= arm["ci"][1] <= 1
            assert set(arm["tasks"]) == {"shut-the-box", "touch-marker"}
            assert arm["episodes"] == len(config["seeds"]) * config["eval_episodes"] * 2
            assert arm["seeds"] == config["seeds"]
        assert "gap_closure" in summary and "lapa_minus_scratch" in summary
    assert set(results["cross_task"]["video_only"]["arms"]["lapa"]["tasks"]) == {"tap-switch"}
    assert set(results["cross_task"]["held_out"]["arms"]["lapa"]["tasks"]) == {"swing-shut"}
    # and how far those episodes got (graded 0..1, success counting 1), with the same paired intervals
    progress = results["cross_task_progress"]["video_only"]
    assert progress["metric"] == "progress" and set(progress["arms"]) == {"scratch", "lapa", "action"}
    for arm in progress["arms"].values():
        assert 0.0 <= arm["ci"][0] <= arm["progress"] <= arm["ci"][1] <= 1.0
    assert "| progress |" in (out / "results" / "results.md").read_text()
    assert set(results["cross_env"]["arms"]) == {"scratch", "lapa", "action"}
    md = (out / "results" / "results.md").read_text()
    for heading in ("In-domain few-shot", "Cross-task", "Held out", "Cross-environment", "Per task"):
        assert heading in md
    assert (out / "results" / "success_vs_demos.png").stat().st_size > 10_000
    # Every step was printed as the public command it runs; the latent actions were rendered.
    assert "lapa laq train --data" in result.stderr and "lapa policy finetune" in result.stderr
    assert "--cotrain-target latents" in result.stderr and "--view dusk" in result.stderr
    assert "--latent-horizon 3" in result.stderr   # the preset's latent pretraining predicts 3 latent actions
    assert "--init scratch --config tiny --vision-model config:siglip-tiny --query-tokens 12" in result.stderr
    latents = out / "pretrain" / "default" / "latents"
    assert (latents / "latents.mp4").is_file() and (latents / "frame_00.png").is_file()
    # The evaluation used the catalogue's instructions of the renamed tasks, on seeds unseen in training.
    episodes = json.loads((out / "cells/in-domain/lapa/k2/seed0/eval_targets.json").read_text())
    shut = episodes["tasks"]["shut-the-box"]["episodes"]
    assert {e["instruction"] for e in shut} <= {"shove the box shut", "make the box closed"}
    assert min(e["seed"] for e in shut) >= config["eval_seed"]
    # The demos each seed trained on are K per task, drawn by seed.
    run = json.loads((out / "cells/in-domain/scratch/k2/seed1/finetune/run.json").read_text())
    assert run["episodes"] == 2 * 2 and run["args"]["demo_seed"] == 1


def test_rerun_skips_finished_steps_whatever_the_thread_count(quick, catalogue):
    out, _ = quick
    preset = json.loads((out / "benchmark.json").read_text())["preset"]
    result = _lapa("benchmark", "--preset", "quick", "--catalogue", catalogue, "--out", out, *TASK_ARGS,
                   "--threads", "1", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "already done" in result.stderr and "lapa policy finetune" not in result.stderr
    assert json.loads((out / "benchmark.json").read_text())["preset"] == preset   # a resource, not a change


def test_lever_run_reuses_pretraining_and_scratch_cells_and_runs_only_the_changed_arm(quick, catalogue, tmp_path):
    """--reuse with one finetuning lever (a head reading only the latent actions): no data or pretraining
    step runs again, the finished scratch cells are taken over, the LAPA cells are finetuned anew."""
    out, _ = quick
    lever = tmp_path / "latents-only"
    result = _lapa("benchmark", "--preset", "quick", "--catalogue", catalogue, "--out", lever, *TASK_ARGS,
                   "--settings", "in-domain", "--arms", "scratch,lapa", "--seeds", "0",
                   "--set", "action_latents_only=true", "--reuse", out, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 finished scratch cells" in result.stderr
    assert "lapa laq train" not in result.stderr and "--init scratch" not in result.stderr
    assert "--action-latents-only" in result.stderr
    run = json.loads((lever / "cells/in-domain/lapa/k2/seed0/finetune/run.json").read_text())
    assert run["args"]["action_latents_only"] is True
    assert (json.loads((lever / "cells/in-domain/scratch/k2/seed0/eval_targets.json").read_text())
            == json.loads((out / "cells/in-domain/scratch/k2/seed0/eval_targets.json").read_text()))
    assert "LAPA" in (lever / "results" / "results.md").read_text()


def test_play_lever_records_play_in_the_demonstrated_scenes_only_and_every_arm_finetunes_on_it(quick, catalogue,
                                                                                                 tmp_path):
    """play_episodes > 0: labelled play is generated in the scenes of the targets and the extra video, never
    in a video-only or held-out task's; the run's LAQ labels it where the LAPA arm's head reads latent
    actions; the pretraining is taken over, the scratch cells are not (they train on the play too)."""
    from lapa_models.data.episodes import EpisodeDataset

    out, _ = quick
    lever = tmp_path / "play"
    result = _lapa("benchmark", "--preset", "quick", "--catalogue", catalogue, "--out", lever, *TASK_ARGS,
                   "--settings", "in-domain", "--arms", "scratch,lapa", "--seeds", "0", "--set", "play_episodes=2",
                   "--set", "play_steps=12", "--set", "action_reads_latents=true", "--reuse", out, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "lapa laq train" not in result.stderr and "finished scratch cells" not in result.stderr
    play = EpisodeDataset(lever / "data" / "play")
    assert sorted(play.load(i).task for i in range(len(play))) == ["shut-the-box"] * 2 + ["touch-marker"] * 2
    assert (lever / "data" / "play" / "latents" / "laq" / "info.json").is_file()
    for arm in ("scratch", "lapa"):
        run = json.loads((lever / f"cells/in-domain/{arm}/k2/seed0/finetune/run.json").read_text())
        assert run["play"]["data"] == [str(lever / "data" / "play")] and run["play"]["samples"] == 4 * 12
        assert run["play"]["latents_given"] is (arm == "lapa")
    assert "play_episodes=2" in (lever / "results" / "results.md").read_text()
    # --reuse: the same recipe takes the play over with its labels and runs nothing; with another LAQ it
    # is copied without them and labelled there
    from lapa_sim.benchmark.config import BenchmarkConfig
    from lapa_sim.benchmark.run import Benchmark

    saved = BenchmarkConfig.from_dict(json.loads((lever / "benchmark.json").read_text()))
    again = Benchmark(saved, tmp_path / "again")
    again.share(lever)
    assert [s.key for s in again.plan() if not again.marker(s).is_file()] == []
    assert (tmp_path / "again" / "data" / "play").is_symlink()
    other = Benchmark(saved.replace(laq_steps=saved.laq_steps + 1), tmp_path / "other")
    other.share(lever)
    copied = tmp_path / "other" / "data" / "play"
    assert copied.is_dir() and not copied.is_symlink() and not (copied / "latents").exists()
    todo = [s.key for s in other.plan() if not other.marker(s).is_file()]
    assert "laq-label-play-default" in todo and "data-play" not in todo
    assert (lever / "data" / "play" / "latents" / "laq" / "info.json").is_file()


def test_reuse_with_another_pretraining_shares_data_and_scratch_but_labels_its_own_copy(quick, tmp_path):
    """A pretraining replicate (pretrain_seed) reuses the generated data and the scratch cells but not the
    pretraining; the video is copied without the source's labels, so labelling cannot overwrite them."""
    from lapa_sim.benchmark.config import BenchmarkConfig, BenchmarkConfigError, built_queries, reusable_parts
    from lapa_sim.benchmark.run import Benchmark

    out, _ = quick
    saved = BenchmarkConfig.from_dict(json.loads((out / "benchmark.json").read_text()))
    none = {"action_pretraining": False, "action_cells": False}
    assert reusable_parts(out, saved.replace(freeze="backbone")) == {"data": True, "laq": True, "pretraining": True,
                                                                     "cells": False, "action_pretraining": True,
                                                                     "action_cells": False, "scratch": True}
    replicate = saved.replace(pretrain_seed=1)
    assert reusable_parts(out, replicate) == {"data": True, "laq": False, "pretraining": False, "cells": False,
                                              **none, "scratch": True}
    assert reusable_parts(out, saved.replace(lr=1e-4)) == {"data": True, "laq": True, "pretraining": False, "cells": False,
                                                           **none, "scratch": False}
    # a lever on the LAPA arm alone (its LAQ, its latent targets) leaves the action arm's work shareable,
    # unless it changes the query tokens every arm is built with (LAQ tokens x latent horizon)
    assert reusable_parts(out, saved.replace(laq_frame_gap=2)) == {
        "data": True, "laq": False, "pretraining": False, "cells": False, "action_pretraining": True,
        "action_cells": True, "scratch": True}
    assert reusable_parts(out, saved.replace(latent_horizon=2)) == {"data": True, "laq": True, "pretraining": False,
                                                                    "cells": False, **none, "scratch": False}
    pinned = saved.replace(latent_horizon=2, query_tokens=built_queries(saved))
    assert reusable_parts(out, pinned)["action_cells"] and reusable_parts(out, pinned)["scratch"]
    # a folder from before query_tokens built its scratch models with the policy config's default
    older = tmp_path / "older"
    older.mkdir()
    (older / "benchmark.json").write_text(json.dumps({k: v for k, v in saved.to_dict().items() if k != "query_tokens"}))
    assert not reusable_parts(older, saved)["scratch"] and reusable_parts(older, saved)["pretraining"]
    with pytest.raises(BenchmarkConfigError, match=r"its data differ in \['video_episodes'\]"):
        reusable_parts(out, saved.replace(video_episodes=7))
    labels_before = _digest(out / "data" / "video" / "latents")
    bench = Benchmark(replicate, tmp_path / "replicate")
    bench.share(out)
    video = tmp_path / "replicate" / "data" / "video"
    assert video.is_dir() and not video.is_symlink() and not (video / "latents").exists()
    assert not (tmp_path / "replicate" / "pretrain").exists()
    steps = {p.name for p in (tmp_path / "replicate" / "steps").iterdir()}
    assert "data-video-default.done" in steps and not any(s.startswith(("laq-", "pretrain-")) for s in steps)
    assert "finetune-in-domain-scratch-k2-s0.done" in steps and not any("-lapa-" in s for s in steps)
    assert _digest(out / "data" / "video" / "latents") == labels_before
    # scratch cells the source has not finished yet run last here (taken over if it finishes them first)
    order = [s.key for s in bench.ordered(bench.plan())]
    first_scratch = min(i for i, k in enumerate(order) if "-scratch-" in k)
    assert first_scratch > max(i for i, k in enumerate(order) if "-scratch-" not in k)


@pytest.mark.parametrize("lever", ["pretrain_steps", "latent_horizon"])
def test_reuse_with_another_policy_pretraining_shares_the_laq_and_its_labels(quick, tmp_path, lever):
    """A lever on the policy's pretraining (its steps, how many latent actions it predicts) keeps the LAQ:
    the video, the LAQ and its labels are linked, their steps taken over, and only the policy pretrainings
    it changes run here (a LAPA-only lever keeps the action arm's pretraining and finished cells too)."""
    from lapa_sim.benchmark.config import BenchmarkConfig, built_queries
    from lapa_sim.benchmark.run import Benchmark

    out, _ = quick
    saved = BenchmarkConfig.from_dict(json.loads((out / "benchmark.json").read_text()))
    labels_before = _digest(out / "data" / "video" / "latents")
    # latent_horizon with the query tokens pinned: the scratch-built arms keep their architecture
    change = {"pretrain_steps": saved.pretrain_steps + 5} if lever == "pretrain_steps" else \
        {"latent_horizon": saved.latent_horizon + 1, "query_tokens": built_queries(saved)}
    bench = Benchmark(saved.replace(**change), tmp_path / "longer")
    parts = bench.share(out)
    assert parts["laq"] and not parts["pretraining"] and parts["scratch"]
    here = tmp_path / "longer"
    assert (here / "data" / "video").is_symlink() and (here / "pretrain" / "default" / "laq").is_symlink()
    assert not (here / "pretrain" / "default" / "lapa").exists() and not (here / "pretrain" / "default").is_symlink()
    steps = {p.name for p in (here / "steps").iterdir()}
    assert {"laq-train-default.done", "laq-label-default.done", "laq-train-dusk.done"} <= steps
    lapa_only = lever == "latent_horizon"
    assert {s for s in steps if s.startswith("pretrain-")} == (
        {"pretrain-action-default.done", "pretrain-action-dusk.done"} if lapa_only else set())
    assert any("-action-" in s and s.startswith("eval-") for s in steps) == lapa_only
    assert not any("-lapa-" in s and s.startswith(("finetune-", "eval-")) for s in steps)
    todo = [s.key for s in bench.plan() if not bench.marker(s).is_file()]
    assert todo[0] == "pretrain-lapa-default" and not any(k.startswith("laq-") for k in todo)
    assert any(k.startswith("pretrain-action-") for k in todo) != lapa_only
    command = next(s for s in bench.plan() if s.key == "pretrain-lapa-default").command()
    assert (f"--latent-horizon {saved.latent_horizon + 1}" in command) == (lever == "latent_horizon")
    assert _digest(out / "data" / "video" / "latents") == labels_before


def test_reuse_takes_over_finished_items_only_and_what_the_source_never_made_runs_here(quick, tmp_path):
    """A source that never made the cross-env view nor the action pretraining (an earlier run with other
    settings and arms): its default video, LAQ, labels and LAPA pretraining are linked item by item, while
    the other view and the action arm run here, in folders of this run, so nothing lands in the source."""
    import shutil

    from lapa_sim.benchmark.config import BenchmarkConfig
    from lapa_sim.benchmark.run import Benchmark

    out, _ = quick
    source = tmp_path / "source"
    shutil.copytree(out, source, symlinks=True, ignore=shutil.ignore_patterns("logs", "cells"))
    saved = BenchmarkConfig.from_dict(json.loads((out / "benchmark.json").read_text()))
    view = saved.view
    shutil.rmtree(source / "data" / f"video-{view}")
    shutil.rmtree(source / "pretrain" / view)
    shutil.rmtree(source / "pretrain" / "default" / "action")
    for marker in (source / "steps").iterdir():
        if marker.name.endswith(f"-{view}.done") or marker.name.startswith("pretrain-action-"):
            marker.unlink()
    before = sorted(str(p.relative_to(source)) for p in source.rglob("*"))

    bench = Benchmark(saved, tmp_path / "here")
    parts = bench.share(source)
    here = tmp_path / "here"
    assert parts["pretraining"] and parts["laq"]
    for item in ("data/demos", "data/video", "pretrain/default/laq", "pretrain/default/latents",
                 "pretrain/default/lapa"):
        assert (here / item).is_symlink(), item
    for folder in ("data", "pretrain", "pretrain/default"):
        assert (here / folder).is_dir() and not (here / folder).is_symlink(), folder
    assert not (here / "pretrain" / "default" / "action").exists() and not (here / "pretrain" / view).exists()
    todo = [s.key for s in bench.plan() if not bench.marker(s).is_file()]
    pretraining = [k for k in todo if k.startswith(("data-", "laq-", "pretrain-"))]
    assert pretraining == ["pretrain-action-default", f"data-video-{view}", f"laq-train-{view}", f"laq-label-{view}",
                           f"laq-show-{view}", f"pretrain-lapa-{view}", f"pretrain-action-{view}"]
    assert sorted(str(p.relative_to(source)) for p in source.rglob("*")) == before
    # run again (a resumed run): the same items, nothing new
    assert bench.share(source) == parts and [s.key for s in bench.plan() if not bench.marker(s).is_file()] == todo

    # a LAQ this run began itself (in progress, no marker) stays its own: not marked done on the source's
    # word, and the LAPA pretraining made from the source's LAQ is not taken over either
    other = Benchmark(saved, tmp_path / "other")
    (tmp_path / "other" / "pretrain" / "default" / "laq").mkdir(parents=True)
    other.share(source)
    assert not (tmp_path / "other" / "pretrain" / "default" / "laq").is_symlink()
    assert not (tmp_path / "other" / "pretrain" / "default" / "lapa").exists()
    todo = [s.key for s in other.plan() if not other.marker(s).is_file()]
    assert {"laq-train-default", "laq-label-default", "pretrain-lapa-default"} <= set(todo)
    assert not (tmp_path / "other" / "data" / "video").is_symlink()   # labelled here: its own copy


def test_reuse_of_a_finished_run_for_fewer_settings_and_arms_takes_over_every_cell_and_runs_nothing(quick, tmp_path):
    """Which cells a run makes is not how it makes one: a run of the same recipe for a subset of the
    settings and arms takes over the finished cells of every arm, the pretrained ones included."""
    from lapa_sim.benchmark.config import BenchmarkConfig
    from lapa_sim.benchmark.run import Benchmark

    out, _ = quick
    saved = BenchmarkConfig.from_dict(json.loads((out / "benchmark.json").read_text()))
    narrower = saved.replace(settings=("in-domain",), arms=("scratch", "lapa"), threads=1)
    bench = Benchmark(narrower, tmp_path / "narrower")
    assert bench.share(out)["cells"]
    assert [s.key for s in bench.plan() if not bench.marker(s).is_file()] == []
    cell = tmp_path / "narrower" / "cells" / "in-domain" / "lapa" / "k2" / "seed0" / "eval_targets.json"
    assert cell.read_text() == (out / "cells" / "in-domain" / "lapa" / "k2" / "seed0" / "eval_targets.json").read_text()
    # another finetuning recipe takes over the pretraining but makes its own cells of the pretrained arms
    lever = Benchmark(narrower.replace(freeze="vision"), tmp_path / "lever")
    assert not lever.share(out)["cells"]
    todo = [s.key for s in lever.plan() if not lever.marker(s).is_file()]
    assert todo and all("-lapa-" in k for k in todo)


def test_reuse_of_several_folders_assembles_a_run_from_their_parts_and_runs_nothing_they_made(quick, catalogue,
                                                                                              tmp_path):
    """`--reuse A --reuse B`: a run split over two folders (one made the LAPA arm, the other the
    action-pretrained arm, both the scratch cells) is assembled into the full run, each item from the
    first folder that finished it; the table is the one the single full run wrote."""
    from lapa_sim.benchmark.config import BenchmarkConfig
    from lapa_sim.benchmark.run import Benchmark

    out, _ = quick
    saved = BenchmarkConfig.from_dict(json.loads((out / "benchmark.json").read_text()))
    halves = {}
    for name, arms in (("with-lapa", ("scratch", "lapa")), ("with-action", ("scratch", "action"))):
        config = saved.replace(arms=arms)
        half = Benchmark(config, tmp_path / name)
        half.share(out)
        assert [s.key for s in half.plan() if not half.marker(s).is_file()] == []
        (tmp_path / name / "benchmark.json").write_text(json.dumps(config.to_dict()))
        halves[name] = tmp_path / name

    # one folder alone leaves the other arm to run
    alone = Benchmark(saved, tmp_path / "alone")
    alone.share(halves["with-lapa"])
    todo = [s.key for s in alone.plan() if not alone.marker(s).is_file()]
    assert todo and all("action" in k for k in todo)

    here = tmp_path / "here"
    result = _lapa("benchmark", "--preset", "quick", "--catalogue", catalogue, "--out", here, *TASK_ARGS,
                   "--reuse", halves["with-lapa"], "--reuse", halves["with-action"], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "already done" in result.stderr and "lapa policy" not in result.stderr   # no step ran here
    assert (here / "pretrain" / "default" / "lapa").resolve() == (out / "pretrain" / "default" / "lapa").resolve()
    assert (here / "pretrain" / "default" / "action").resolve() == (out / "pretrain" / "default" / "action").resolve()
    ours, full = (json.loads((folder / "results" / "results.json").read_text()) for folder in (here, out))
    for part in ("in_domain", "cross_task", "cross_env"):
        assert ours[part] == full[part], part

    # the labels live next to the video: a folder whose LAQ agrees does not lend it over a video taken
    # unlabelled from an earlier folder (another pretraining's data), or the LAQ would have no labels
    import shutil

    other = tmp_path / "other-pretraining"
    shutil.copytree(out, other, symlinks=True, ignore=shutil.ignore_patterns("cells", "logs", "pretrain"))
    (other / "benchmark.json").write_text(json.dumps(saved.replace(pretrain_seed=7).to_dict()))
    mixed = Benchmark(saved, tmp_path / "mixed")
    mixed.share(other)
    mixed.share(out)
    assert not (tmp_path / "mixed" / "data" / "video").is_symlink()
    assert not (tmp_path / "mixed" / "pretrain" / "default" / "laq").exists()
    todo = [s.key for s in mixed.plan() if not mixed.marker(s).is_file()]
    assert {"laq-train-default", "laq-label-default", "pretrain-lapa-default"} <= set(todo)


def _replicate_of(out: Path, folder: Path, pretrain_seed: int) -> Path:
    """A copy of the quick folder standing for another pretraining: its benchmark.json says
    pretrain_seed, and its LAPA cells' episodes are flipped (real result files; the pooling is what is
    tested, the run that makes such a folder is tested above)."""
    import shutil

    shutil.copytree(out, folder, symlinks=True, ignore=shutil.ignore_patterns("data", "pretrain", "logs"))
    config = json.loads((folder / "benchmark.json").read_text())
    (folder / "benchmark.json").write_text(json.dumps({**config, "pretrain_seed": pretrain_seed}))
    for path in (folder / "cells").rglob("eval_*.json"):
        if "/lapa/" in str(path):
            result = json.loads(path.read_text())
            for entry in result["tasks"].values():
                for episode in entry["episodes"]:
                    episode["success"] = not episode["success"]
            path.write_text(json.dumps(result))
    return folder


def test_pool_of_pretraining_replicates_writes_one_table_with_each_replicate_and_the_pooled_row(quick, tmp_path):
    out, _ = quick
    other = _replicate_of(out, tmp_path / "replicate1", 1)
    pooled = tmp_path / "pooled"
    result = _lapa("benchmark", "--pool", out, other, "--out", pooled, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((pooled / "results" / "results.json").read_text())
    assert [r["pretrain_seed"] for r in results["replicates"]] == [0, 1]
    own = json.loads((out / "results" / "results.json").read_text())
    for k, summary in results["in_domain"].items():
        rate = own["in_domain"][k]["arms"]["lapa"]["success"]
        rates = [rate, 1 - rate]   # every LAPA episode of the replicate flipped
        assert [r["arms"]["lapa"]["success"] for r in summary["replicates"]] == pytest.approx(rates)
        assert summary["arms"]["lapa"]["success"] == pytest.approx(0.5)
        # the scratch cells are the same files in both folders: one sample, its own folder's rate
        assert summary["arms"]["scratch"]["success"] == pytest.approx(own["in_domain"][k]["arms"]["scratch"]["success"])
        lo, hi = summary["lapa_minus_scratch"]["ci"]
        assert lo <= summary["lapa_minus_scratch"]["value"] <= hi
    assert set(results["cross_task"]) == {"video_only", "held_out"} and results["cross_env"] is not None
    # how far the cross-task episodes got, pooled the same way (the copies keep each episode's progress)
    progress = results["cross_task_progress"]["video_only"]
    assert progress["metric"] == "progress" and len(progress["replicates"]) == 2
    assert progress["arms"]["lapa"]["progress"] == pytest.approx(
        own["cross_task_progress"]["video_only"]["arms"]["lapa"]["progress"])
    text = (pooled / "results" / "results.md").read_text()
    assert "replicate 2 (pretrain_seed 1)" in text and "**pooled**" in text
    assert "## Cross-task progress" in text and "video_only, pooled" in text
    assert (pooled / "results" / "replicates.png").stat().st_size > 10_000


def test_pool_refuses_folders_that_are_not_replicates_and_writes_nothing(quick, tmp_path):
    out, _ = quick
    other = _replicate_of(out, tmp_path / "other", 1)
    config = json.loads((other / "benchmark.json").read_text())
    (other / "benchmark.json").write_text(json.dumps({**config, "finetune_steps": 7}))
    pooled = tmp_path / "pooled"
    for args, message in (([out, other], "finetune_steps"), ([out], "at least 2"), ([out, out], "named twice"),
                          ([out, tmp_path], "not a benchmark folder")):
        result = _lapa("benchmark", "--pool", *args, "--out", pooled, timeout=120)
        assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    # a replicate made from another catalogue entry of a task it uses (here: another instruction)
    specs = json.loads((out / "benchmark.json").read_text())["catalogue_specs"]
    task = sorted(specs["tasks"])[0]
    specs["tasks"][task] = {**specs["tasks"][task], "instructions": ["something else entirely"]}
    (other / "benchmark.json").write_text(json.dumps({**config, "catalogue_specs": specs}))
    result = _lapa("benchmark", "--pool", out, other, "--out", pooled, timeout=120)
    assert result.returncode == 2 and f"task '{task}' in the catalogue (instructions differ)" in result.stderr, \
        result.stderr[-2000:]
    result = _lapa("benchmark", "--pool", out, other, "--out", pooled, "--set", "lr=1", timeout=120)
    assert result.returncode == 2 and "drop --set" in result.stderr
    result = _lapa("benchmark", "--pool", out, other, "--out", out, timeout=120)
    assert result.returncode == 2 and "is a benchmark folder" in result.stderr
    assert not pooled.exists()


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(str(f).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def test_other_configuration_in_the_same_folder_is_refused_and_nothing_changes(quick, catalogue):
    out, _ = quick
    before = _digest(out / "results") + _digest(out / "steps")
    saved = (out / "benchmark.json").read_text()
    result = _lapa("benchmark", "--preset", "quick", "--catalogue", catalogue, "--out", out, *TASK_ARGS,
                   "--seeds", "0,1,2", timeout=120)
    assert result.returncode == 2
    assert "another configuration" in result.stderr and "seeds" in result.stderr
    assert (out / "benchmark.json").read_text() == saved
    assert _digest(out / "results") + _digest(out / "steps") == before


@pytest.mark.parametrize("args, message", [
    (["--targets", "shut-the-box,fly-to-the-moon"], "unknown task 'fly-to-the-moon'"),
    (["--targets", "shut-the-box", "--video-only", "no-expert"], "no-expert' has no scripted expert"),
    (["--targets", "shut-the-box", "--shots", "2,9"], "more than the 3 generated per target task"),
    (["--targets", "shut-the-box", "--video-only", "shut-the-box"], "each task has one role"),
    (["--targets", "shut-the-box", "--held-out", "none", "--video-only", "none"], "cross-task needs"),
    (["--targets", "shut-the-box", "--set", "eval_seed=2"], "overlap the video seeds"),
    (["--targets", "shut-the-box", "--set", "view=noon"], "unknown view 'noon'"),
    (["--targets", "shut-the-box", "--arms", "lapa,action"], "scratch arm is the baseline"),
    (["--targets", "shut-the-box", "--set", "colour=blue"], "unknown setting"),
    (["--targets", "shut-the-box", "--set", "lr=-1"], "lr must be a finite number > 0, got -1.0"),
    (["--targets", "shut-the-box", "--set", "lr=inf"], "lr must be a finite number > 0"),
    (["--targets", "shut-the-box", "--set", "cotrain_weight=nan"], "cotrain_weight must be a finite number >= 0"),
    (["--targets", "shut-the-box", "--set", "cotrain_weight=-0.5"], "cotrain_weight must be a finite number >= 0"),
    (["--targets", "shut-the-box", "--threads", "-1"], "threads must be a whole number >= 0"),
    (["--targets", "shut-the-box", "--set", "laq_frame_gap=0"], "laq_frame_gap must be a whole number >= 1"),
    (["--targets", "shut-the-box", "--set", "demo_seed=-3"], "demo_seed must be a whole number >= 0"),
    (["--targets", "shut-the-box", "--seeds=-1"], "seeds must be >= 0"),
    (["--targets", "shut-the-box", "--set", "execution=open-loop:0"], "open-loop:N needs a whole number N >= 1"),
    (["--targets", "shut-the-box", "--set", "execution=blend"], "execution must be"),
    (["--targets", "shut-the-box", "--set", "play_weight=0"], "play_weight must be a finite number > 0"),
    (["--targets", "shut-the-box", "--set", "play_steps=1"], "play_steps must be a whole number >= 2"),
    (["--targets", "shut-the-box", "--set", "play_episodes=40000"], "play seeds from 70000 would reach"),
    (["--targets", "shut-the-box", "--set", "freeze=vision", "--set", "action_reads_latents=maybe"],
     "action_reads_latents=maybe: expected one of"),
])
def test_bad_input_is_a_clear_error_before_any_work(catalogue, tmp_path, args, message):
    out = tmp_path / "bench"
    result = _lapa("benchmark", "--preset", "quick", "--catalogue", catalogue, "--out", out, *TASK_ARGS, *args,
                   timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_finetune_refuses_more_demos_per_task_than_the_data_has(quick, tmp_path):
    out, _ = quick
    result = _lapa("policy", "finetune", "--data", out / "data" / "demos", "--init", "scratch", "--config", "tiny",
                   "--demos-per-task", 7, "--val-fraction", 0, "--steps", 1, "--out", tmp_path / "ft", timeout=300)
    assert result.returncode != 0
    assert "--demos-per-task 7" in result.stderr and "shut-the-box" in result.stderr


def test_threads_0_is_torchs_default_and_no_step_is_given_a_thread_count(catalogue, tmp_path):
    result = _lapa("benchmark", "--preset", "quick", "--catalogue", catalogue, "--out", tmp_path / "bench", *TASK_ARGS,
                   "--threads", "0", "--plan", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "lapa policy finetune" in result.stdout and "--threads" not in result.stdout


def test_out_that_is_a_file_or_a_folder_of_other_files_is_refused_and_nothing_is_written(catalogue, tmp_path):
    mine = tmp_path / "mine"
    (mine / "results").mkdir(parents=True)
    (mine / "results" / "results.md").write_text("my own results\n")
    before = _digest(mine)
    result = _lapa("benchmark", "--preset", "quick", "--catalogue", catalogue, "--out", mine, *TASK_ARGS, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "not a benchmark folder (no benchmark.json)" in result.stderr and "Nothing was changed" in result.stderr
    assert _digest(mine) == before and sorted(p.name for p in mine.iterdir()) == ["results"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out in (afile, afile / "below"):
        result = _lapa("benchmark", "--preset", "quick", "--catalogue", catalogue, "--out", out, *TASK_ARGS,
                       timeout=120)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert "is a file, not a folder" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert afile.read_text() == "x"
    empty = tmp_path / "empty"
    empty.mkdir()   # an empty folder is a new benchmark folder
    result = _lapa("benchmark", "--preset", "quick", "--catalogue", catalogue, "--out", empty, *TASK_ARGS, "--plan",
                   timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


# A scratch-only run of one target (about 15 s): what resuming and --reuse make of a changed catalogue entry.
SMALL = {"tasks": {"poke-dot": {"env": "reach-v3", "expert": "SawyerReachV3Policy", "instructions": ["poke the dot"],
                                "max_steps": 30},
                   "shut-lid": {"env": "door-close-v3", "expert": "SawyerDoorCloseV3Policy",
                                "instructions": ["shut the lid"], "max_steps": 30}}}
SMALL_ARGS = ["--preset", "quick", "--arms", "scratch", "--settings", "in-domain,cross-task", "--seeds", "0", "--threads", "1",
              "--targets", "poke-dot", "--video-only", "none", "--held-out", "shut-lid"]


def _small_catalogue(folder: Path, name: str, **changes) -> Path:
    raw = json.loads(json.dumps(SMALL))
    for task, fields in changes.items():
        raw["tasks"][task].update(fields)
    path = folder / name
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    folder = tmp_path_factory.mktemp("small")
    catalogue = _small_catalogue(folder, "tasks.yaml")
    out = folder / "run"
    result = _lapa("benchmark", *SMALL_ARGS, "--catalogue", catalogue, "--out", out, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, catalogue


@pytest.mark.parametrize("task, change, field", [
    ("poke-dot", {"instructions": ["press the dot"]}, "instructions"),
    ("poke-dot", {"max_steps": 31}, "max_steps"),
    ("poke-dot", {"camera": {"azimuth": 10.0}}, "camera"),
    ("shut-lid", {"instructions": ["close the lid"]}, "instructions"),   # a held-out task: its evaluation
])
def test_resume_with_another_catalogue_entry_for_a_task_of_the_run_is_refused(small, tmp_path, task, change, field):
    out, _ = small
    before = _digest(out)
    changed = _small_catalogue(tmp_path, "changed.yaml", **{task: change})
    result = _lapa("benchmark", *SMALL_ARGS, "--catalogue", changed, "--out", out, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "another configuration" in result.stderr and "Nothing was changed" in result.stderr
    assert f"task '{task}' in the catalogue ({field} differ)" in result.stderr
    assert _digest(out) == before


def test_resume_with_the_same_catalogue_entries_runs_nothing(small, tmp_path):
    out, catalogue = small
    # the same entries in another file, and an entry of a task the run does not use changed: still this run
    same = _small_catalogue(tmp_path, "same.yaml")
    raw = yaml.safe_load(same.read_text())
    raw["tasks"]["unused"] = {"env": "push-v3", "expert": "SawyerPushV3Policy", "instructions": ["push"]}
    same.write_text(yaml.safe_dump(raw))
    result = _lapa("benchmark", *SMALL_ARGS, "--catalogue", same, "--out", out, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "5 already done" in result.stderr and "lapa policy finetune" not in result.stderr
    record = json.loads((out / "benchmark.json").read_text())["catalogue_specs"]
    assert set(record["tasks"]) == {"poke-dot", "shut-lid"}
    assert record["tasks"]["poke-dot"]["instructions"] == ["poke the dot"]


def test_a_folder_from_before_the_catalogue_record_resumes_and_records_the_catalogue_it_resumes_with(small, tmp_path):
    out, _ = small
    old = tmp_path / "old"
    shutil.copytree(out, old, symlinks=True)
    saved = json.loads((old / "benchmark.json").read_text())
    del saved["catalogue_specs"]
    (old / "benchmark.json").write_text(json.dumps(saved, indent=2) + "\n")
    changed = _small_catalogue(tmp_path, "changed.yaml", **{"poke-dot": {"instructions": ["press the dot"]}})
    result = _lapa("benchmark", *SMALL_ARGS, "--catalogue", changed, "--out", old, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]   # unknown: accepted
    record = json.loads((old / "benchmark.json").read_text())["catalogue_specs"]
    assert record["tasks"]["poke-dot"]["instructions"] == ["press the dot"]
    # from now on the folder is held to that catalogue
    result = _lapa("benchmark", *SMALL_ARGS, "--catalogue", _small_catalogue(tmp_path, "orig.yaml"), "--out", old,
                   timeout=120)
    assert result.returncode == 2 and "task 'poke-dot' in the catalogue (instructions differ)" in result.stderr


def test_reuse_shares_nothing_generated_from_another_catalogue_entry(small, tmp_path):
    from lapa_sim.benchmark.config import BenchmarkConfig, catalogue_record, reusable_parts
    from lapa_sim.tasks import load_catalogue

    out, _ = small
    changed = _small_catalogue(tmp_path, "changed.yaml", **{"poke-dot": {"max_steps": 50}})
    lever = tmp_path / "lever"
    result = _lapa("benchmark", *SMALL_ARGS, "--catalogue", changed, "--set", "lr=0.001", "--reuse", out,
                   "--out", lever, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"--reuse {out}: its data were generated from other catalogue entries" in result.stderr
    assert "task 'poke-dot' in the catalogue (max_steps differ)" in result.stderr
    assert not lever.exists()
    # a held-out task's entry changed: the data are shared, not the cells evaluated on it
    config = BenchmarkConfig.from_dict(json.loads((out / "benchmark.json").read_text()))
    held = _small_catalogue(tmp_path, "held.yaml", **{"shut-lid": {"instructions": ["close the lid"]}})
    parts = reusable_parts(out, config, catalogue_record(config, load_catalogue(str(held))))
    assert parts["data"] and not parts["scratch"] and not parts["cells"]
    parts = reusable_parts(out, config, catalogue_record(config, load_catalogue(str(_small_catalogue(tmp_path, "o.yaml")))))
    assert parts["scratch"] and parts["cells"]
