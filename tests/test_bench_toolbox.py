"""bench/toolbox_demo.py: one variant trains on the tiny digits competition and is scored on its
held-back labels; the table calls a difference a gain only beyond the seed-to-seed noise."""
from __future__ import annotations


def test_a_variant_runs_and_is_scored(bench_script, digits_comp, tmp_path):
    r = bench_script("toolbox_demo").run_variant("top_k", 42, str(digits_comp), str(tmp_path))
    assert r["variant"] == "top_k" and r["epochs"] == 7 and r["train_s"] > 0
    assert r["averaging"]["method"] == "top_k" and len(r["averaging"]["epochs"]) == 3
    assert 0 <= r["test_acc"] <= 1 and r["test_log_loss"] > 0 and 0 <= r["oof_acc"] <= 1


def test_table_names_only_differences_beyond_the_noise(bench_script):
    bench = bench_script("toolbox_demo")
    rows = []
    for seed, noise in zip(range(4), (0.01, -0.01, 0.005, -0.005)):
        base = dict(seed=seed, train_s=10.0, cpu_s=20.0, oof_acc=0.80 + noise, test_acc=0.80 + noise,
                    oof_log_loss=0.50 - noise, test_log_loss=0.50 - noise)
        rows.append({**base, "variant": "baseline"})
        rows.append({**base, "variant": "swa", "oof_log_loss": base["oof_log_loss"] - 0.05})   # clearly better
        rows.append({**base, "variant": "plateau", "test_acc": base["test_acc"] - 0.002})      # within the noise
    lines = {line.split(" | ")[1].split(" ")[0]: line for line in bench.table(rows).splitlines()[2:]}
    assert "better oof log loss -0.0500" in lines["swa"] and "test" not in lines["swa"].split(" | ")[-1]
    assert "no (within seed noise) [4 seeds]" in lines["plateau"]
    assert lines["baseline"].endswith("| - |")
