"""The training-step benchmark (`covgan_utils.bench`, `python -m covgan_utils bench`) on the `smoke` preset, in
seconds: a worker's JSON has every field, the textbook step trains the project's own models, the PyTorch
models have the Keras models' shapes and parameters, the FLOP count of a small model is the hand count,
the report renders every table and marks a failed target, and bad arguments are one line."""
import copy
import json

import keras
import numpy as np
import pytest
from conftest import make_blobs, one_line_error

from covgan_utils import cli, config
from covgan_utils.bench import document, flops, plan, runner, textbook, timing, torch_loop, worker
from covgan_utils.nets import families

ROW_FIELDS = ("preset", "backend", "precision", "batch", "device", "data", "steps", "project_ms", "extras_off_ms", "textbook_ms",
              "torch_ms", "torch_note", "in_training_ms", "in_training", "flops", "peak_memory_bytes", "memory_kind", "process_peak_bytes")
DERIVED = ("extras_off_over_textbook", "in_training_over_project", "gflops_per_s", "peak_flops_per_s", "peak_share")


def _smoke():
    return config.get_preset("smoke")


@pytest.fixture(scope="module")
def worker_row():
    spec = {"kind": "config", "preset": "smoke", "precision": "float32", "steps": 1, "train_epochs": 2, "train_images": -2}
    return worker.run(spec, say=lambda line: None)


def test_the_worker_json_has_every_field(worker_row):
    row = json.loads(json.dumps(worker_row))  # what the parent reads back
    assert set(ROW_FIELDS) <= set(row) and "errors" not in row, row.get("errors")
    for key in ("project_ms", "extras_off_ms", "textbook_ms", "in_training_ms"):
        assert row[key] > 0, key
    assert row["torch_ms"] > 0 or row["torch_note"].startswith("n/a")
    assert row["steps"] == {"project": 1, "extras_off": 1, "textbook": 1, "torch": row["steps"]["torch"],
                            "in_training_epochs": 2, "in_training_steps_per_epoch": 2}
    assert row["in_training"]["steps_per_epoch"] == 2 and len(row["in_training"]["epoch_seconds"]) == 2
    # paired ratios: extras off / textbook over paired rounds, in training / the bare step timed after each epoch
    rounds = row["paired_rounds"]
    assert len(rounds["extras_off"]) == len(rounds["textbook"]) == 1
    assert row["extras_off_over_textbook"] == pytest.approx(rounds["extras_off"][0] / rounds["textbook"][0])
    bare, seconds = row["in_training"]["bare_step_ms"], row["in_training"]["epoch_seconds"]
    assert len(bare) == 2 and row["in_training_over_project"] == pytest.approx(1000 * seconds[1] / 2 / bare[1])
    assert row["flops"]["step"] == flops.step_flops(row["flops"]["g_forward"], row["flops"]["d_forward"], row["batch"])
    assert row["peak_memory_bytes"] > 0 and row["memory_kind"]
    device = {"backend": row["backend"], "device": "cpu", "versions": {}, "errors": {}, "sweep": [],
              "matmul": [{"backend": row["backend"], "dtype": "float32", "size": 64, "flops_per_s": 1e10, "ms": 1.0}]}
    merged = runner.merge({"hardware": "cpu", "gpu": False}, plan.cpu_plan(), [row], [device], [], "python -m covgan_utils bench")
    assert all(merged["rows"][0][key] is not None for key in DERIVED)
    assert merged["rows"][0]["extras_off_over_textbook"] == row["extras_off_over_textbook"]  # the paired ratio is kept
    assert merged["rows"][0]["peak_share"] == pytest.approx(merged["rows"][0]["gflops_per_s"] / 1e10)
    assert {"device", "date", "commit", "command", "data", "plan", "rows", "speedups", "matmul", "sweep", "failures"} <= set(merged)
    assert "## Training step" in document.render(merged)


def test_a_light_job_times_the_extras_off_step_alone():
    spec = {"kind": "config", "preset": "smoke", "precision": "float32", "steps": 1, "train_epochs": 2, "train_images": -2,
            "parts": list(plan.LIGHT_PARTS)}
    row = worker.run(spec, say=lambda line: None)
    assert row["extras_off_ms"] > 0 and row["flops"]["step"] > 0 and "errors" not in row
    assert [row[k] for k in ("project_ms", "textbook_ms", "torch_ms", "in_training_ms", "peak_memory_bytes")] == [None] * 5


def test_the_textbook_step_trains_the_projects_models():
    cfg = _smoke()
    step = textbook.make_step(cfg)
    for built, made in ((step.generator, families.generator_for(cfg)), (step.discriminator, families.discriminator_for(cfg))):
        assert [type(layer).__name__ for layer in built.layers] == [type(layer).__name__ for layer in made.layers]
        assert built.count_params() == made.count_params()
    g0, d0 = step.weights()
    logs = step(make_blobs(cfg.batch_size))
    assert np.isfinite(float(logs["d_loss"])) and np.isfinite(float(logs["g_loss"]))
    g1, d1 = step.weights()
    for before, after in ((g0, g1), (d0, d1)):
        assert any(not np.array_equal(a, b) for a, b in zip(before, after))


def _keras_params(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize("changes", [{}, {"upsample": "resize", "g_out_kernel": 3}, {"upsample": "bilinear", "d_dropout": 0.0}])
def test_the_torch_models_have_the_keras_shapes_and_parameters(changes):
    torch = pytest.importorskip("torch")
    cfg = config.get_preset("smoke", **changes)
    G, D = torch_loop.torch_models(cfg)
    kg, kd = families.generator_for(cfg), families.discriminator_for(cfg)
    assert sum(p.numel() for p in G.parameters()) == _keras_params(kg)
    assert sum(p.numel() for p in D.parameters()) == _keras_params(kd)
    z = np.zeros((2, cfg.latent_dim), np.float32)
    images = G.eval()(torch.from_numpy(z))  # [2, 1, 128, 128]
    assert tuple(images.permute(0, 2, 3, 1).shape) == tuple(kg(z).shape)
    assert tuple(D.eval()(images).shape) == tuple(kd(np.zeros((2, 128, 128, 1), np.float32)).shape)


def test_a_family_without_a_torch_mapping_is_named():
    pytest.importorskip("torch")
    result = torch_loop.time_loop(config.get_preset("smoke-style"), make_blobs(10), 1)
    assert result["note"].startswith("n/a (") and "ms" not in result


def test_the_flop_count_of_a_small_model_is_the_hand_count():
    x = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same")(x)  # 2 * 8*8 * 3*3*3*4 = 13824
    h = keras.layers.BatchNormalization()(h)  # elementwise: 0
    h = keras.layers.Conv2DTranspose(2, 3, strides=2, padding="same")(h)  # 2 * 8*8 (input) * 3*3*4*2 = 9216
    h = keras.layers.Flatten()(h)
    y = keras.layers.Dense(5)(h)  # 2 * 16*16*2 * 5 = 5120
    assert flops.forward_flops(keras.Model(x, y)) == 13824 + 9216 + 5120
    assert flops.step_flops(10, 1, batch=2) == 2 * (10 + 6) + 2 * (30 + 2)  # D update + one G update


SAMPLE = {
    "device": "CPU (2 cores, test)", "date": "2025-01-01 00:00 UTC", "commit": "abc123", "command": "python -m covgan_utils bench --steps 2",
    "data": "random images in [-1, 1] (no data found)", "versions": {"tensorflow": {"keras": "3"}}, "plan": {"quick_check": False},
    "rows": [
        {"preset": "quick", "backend": "tensorflow", "precision": "float32", "batch": 32, "project_ms": 900.0, "extras_off_ms": 700.0,
         "textbook_ms": 690.0, "extras_off_over_textbook": 700 / 690, "torch_ms": None, "torch_note": "n/a (NoiseInjection)",
         "in_training_ms": 950.0, "in_training_over_project": 950 / 900, "flops": {"step": 4.0e10}, "gflops_per_s": 4.4e10,
         "peak_share": 0.3, "peak_memory_bytes": 2**30, "memory_kind": "peak RSS of the process",
         "steps": {"project": 2, "extras_off": 2, "textbook": 2, "torch": None, "in_training_epochs": 3, "in_training_steps_per_epoch": 15}},
        {"preset": "quick", "backend": "tensorflow", "precision": "mixed_bfloat16", "batch": 32, "project_ms": 600.0, "extras_off_ms": 560.0,
         "textbook_ms": 500.0, "extras_off_over_textbook": 1.12, "torch_ms": 400.0, "torch_note": None, "in_training_ms": 700.0,
         "in_training_over_project": 700 / 600, "flops": {"note": "n/a (Foo)"}, "gflops_per_s": None, "peak_share": None,
         "peak_memory_bytes": None, "steps": {"project": 2}},
    ],
    "speedups": [{"preset": "quick", "backend": "tensorflow", "precision": "mixed_bfloat16", "project": 1.5, "extras_off": 1.25,
                  "textbook": 1.38, "in_training": 1.36, "torch": None}],
    "matmul": [{"backend": "tensorflow", "dtype": "float32", "size": 2048, "ms": 120.0, "flops_per_s": 1.43e11}],
    "sweep": [{"backend": "tensorflow", "preset": "quick", "precision": "float32", "batch": b, "ms": 30.0 * b, "images_per_s": 1000 / 30.0}
              for b in (16, 32)],
    "failures": [{"job": "jax quick float32", "error": "MemoryError"}],
}


def test_render_writes_every_table_and_marks_a_failed_target():
    text = document.render(copy.deepcopy(SAMPLE))
    for heading in ("# Performance", "## Training step", "## Mixed precision speed-up", "## Measured matmul peak", "## Batch sweep",
                    "## Timed steps per measurement", "## Failures"):
        assert heading in text, heading
    assert "CPU (2 cores, test)" in text and "abc123" in text and "python -m covgan_utils bench --steps 2" in text
    lines = {line.split(" | ")[2]: line for line in text.splitlines() if line.startswith("| `quick` | tensorflow |") and line.count("|") == 16}
    assert "| 1.01 (pass) |" in lines["float32"] and "| 1.06 (pass) |" in lines["float32"]
    assert "| 1.12 (**fail**) |" in lines["mixed_bfloat16"] and "| 1.17 (**fail**) |" in lines["mixed_bfloat16"]
    assert "n/a (NoiseInjection)" in lines["float32"] and "| 40.00 | 44.0 | 30.0% | 1024 |" in lines["float32"]
    assert "| 1.50x | 1.25x | 1.38x | 1.36x | n/a |" in text and "MemoryError" in text


def test_the_readme_block_is_replaced_whole():
    text = "intro\n" + document.readme_block(None) + "\nafter\n"
    new = document.replace_readme_block(text, copy.deepcopy(SAMPLE))
    assert new.startswith("intro\n") and new.endswith("\nafter\n") and "| `quick` | 32 | tensorflow | float32 | 900 | 950 |" in new
    with pytest.raises(ValueError, match="0 step-time blocks"):
        document.replace_readme_block("no block", SAMPLE)


def test_the_cpu_plan_and_the_flags():
    cpu = plan.cpu_plan()
    assert cpu.jobs()[:2] == [("tensorflow", "quick", "float32", None), ("tensorflow", "quick", "mixed_bfloat16", None)]
    assert ("jax", "best", "float32", None) not in cpu.jobs() and cpu.sweep_backends == ("tensorflow",)
    slow_bf16 = plan.cpu_plan(bf16_units=False).jobs()  # bfloat16 without the units: one light job
    assert [j for j in slow_bf16 if j[2] != "float32"] == [("tensorflow", "quick", "mixed_bfloat16", plan.LIGHT_PARTS)]
    assert plan.gpu_plan().backends == ("jax",) and "gpu" in plan.gpu_plan().presets["jax"]
    changed = plan.with_flags(cpu, presets=["smoke"], backends=["jax"], steps=2, quick_check=True)
    assert changed.jobs() == [("jax", "smoke", "float32", None), ("jax", "smoke", "mixed_bfloat16", None)] and changed.steps == {"jax": 2}
    assert changed.sweep_backends == () and changed.quick_check and plan.training_count(-2, 10, 40) == 20
    assert plan.with_flags(plan.cpu_plan(bf16_units=False), precisions=["float32"]).light == {}


@pytest.mark.parametrize("argv, texts", [
    (["--presets", "nosuch"], ("--presets", "'nosuch'", "choose from")),
    (["--backends", "torch"], ("--backends", "'torch'", "choose from")),
    (["--precisions", "float64"], ("--precisions", "'float64'", "choose from")),
    (["--out", "{tmp}/missing/report.json"], ("--out", "does not exist", "create it")),
    (["--out", "{tmp}/report.txt"], ("--out", "expected a .json file")),
    (["--out", "{tmp}/r.json", "--markdown", "{tmp}/missing/P.md"], ("--markdown", "does not exist")),
    (["--render", "{tmp}/none.json", "--markdown", "{tmp}/P.md"], ("--render", "does not exist")),
    (["--render", "{tmp}/bad.json", "--markdown", "{tmp}/P.md"], ("bad.json", "not valid JSON")),
    (["--render", "{tmp}/bad.json"], ("--render needs --markdown",)),
    (["--out", "{tmp}/r.json", "--readme", "{tmp}/bad.json"], ("0 step-time blocks",)),
])
def test_bad_arguments_are_one_line(argv, texts, tmp_path, capsys):
    (tmp_path / "bad.json").write_text("{not json")
    assert cli.main(["bench", *[a.format(tmp=tmp_path) for a in argv]]) == 2
    one_line_error(capsys, *texts)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json"]


def test_zero_steps_is_one_line(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["bench", "--steps", "0"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "--steps" in err and "at least 1" in err and err.count("\n") == 1


def test_render_from_a_report_file(tmp_path, capsys):
    (tmp_path / "r.json").write_text(json.dumps(SAMPLE))
    assert cli.main(["bench", "--render", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "P.md")]) == 0
    assert (tmp_path / "P.md").read_text() == document.render(copy.deepcopy(SAMPLE))


def test_paired_rounds_split_the_steps_and_alternate_the_order():
    seen = []

    def call(name):
        return lambda variant: seen.append((name, variant)) or {"g_loss": np.float32(0.0)}

    means, rounds = timing.paired({"a": (call("a"), [0, 1, 2, 3]), "b": (call("b"), [None] * 4)}, rounds=2)
    warm = [("a", 0), ("a", 1), ("a", 2), ("a", 3), ("b", None)]
    assert seen == warm + [("a", 0), ("a", 1), ("b", None), ("b", None), ("b", None), ("b", None), ("a", 2), ("a", 3)]
    assert set(means) == {"a", "b"} and [len(r) for r in rounds.values()] == [2, 2]
    assert timing.median_ratio([2.0, 4.0, 9.0], [1.0, 1.0, 1.0]) == 4.0
