from harness import tracking


def results():
    def po(mode, wall, pipeline, run_id=None):
        return {"framework": "promptopt", "mode": mode, "wall_s": wall, "cpu_s": 0.05, "pipeline_s": pipeline,
                "lm_calls": 943, "mlflow_run_id": run_id, "warnings": []}

    def ds(mode, wall, run_id=None):
        return {"framework": "dspy", "mode": mode, "wall_s": wall, "cpu_s": 2.0, "setup_s": 0.1 if mode != "off" else 0,
                "dspy_import_s": 0.4, "mlflow_import_s": 0.7 if mode != "off" else 0, "lm_calls": 934,
                "mlflow_run_id": run_id}

    runs = [po("off", 0.10, 0.05), po("off", 0.12, 0.05), po("off", 0.30, 0.05),
            po("server", 0.20, 0.05, "r1"), po("server", 0.25, 0.06, "r2"), po("server", 0.22, 0.05, "r3"),
            ds("off", 2.0), ds("off", 2.2), ds("autolog-full", 5.0, "d1"), ds("autolog-full", 6.0, "d2")]
    return {
        "meta": {"date": "2026-12-04", "cpus": 2, "cpu_model": "Test CPU", "system": "Linux", "commit": "abc",
                 "mlflow_server": "MLflow 3.18.0", "repeats": 3, "dspy_repeats": 2},
        "runs": runs,
        "recorded": {
            "promptopt/server": {"params": 18, "tags": 13, "metric_keys": 21, "metric_values": 61, "artifacts": 7,
                                 "artifact_bytes": 35000, "nested_runs": 0, "model_versions": 1,
                                 "server_requests": 15.0},
            "dspy/autolog-full": {"params": 2, "tags": 8, "metric_keys": 10, "metric_values": 18, "artifacts": 21,
                                  "artifact_bytes": 500000, "nested_runs": 9, "model_versions": 0},
        },
    }


def test_overhead_compares_median_with_median_and_min_with_min():
    rows = {(r["framework"], r["mode"]): r for r in tracking.summary(results())}
    server = rows[("promptopt", "server")]
    assert server["median_s"] == 0.22 and server["min_s"] == 0.20
    assert round(server["overhead_median_pct"], 1) == round(100 * (0.22 / 0.12 - 1), 1)
    assert round(server["overhead_min_pct"], 1) == 100.0
    assert round(server["outside_s"], 3) == 0.17
    full = rows[("dspy", "autolog-full")]
    assert round(full["overhead_median_pct"], 1) == round(100 * (5.5 / 2.1 - 1), 1)


def test_tables_show_both_frameworks_and_what_was_recorded():
    text = tracking.tables(results())
    assert "| promptopt, MLflow server | 3 | 943 | 0.220 | 0.200 | +83.3 % | +100.0 % | +100 |" in text
    assert "61 metric values (21 series), 18 params, 7 artifacts, 1 model version" in text
    assert "9 nested runs" in text
    assert "15 HTTP requests" in text


def test_check_flags_different_work_and_missing_run_ids():
    data = results()
    assert tracking.check(data["runs"]) == []
    data["runs"][3]["mlflow_run_id"] = None
    data["runs"][0]["lm_calls"] = 1000
    problems = tracking.check(data["runs"])
    assert any("different numbers of LM calls" in p for p in problems)
    assert any("promptopt server" in p for p in problems)


def test_modes_rotate():
    assert tracking.rotated(("a", "b", "c"), 0) == ["a", "b", "c"]
    assert tracking.rotated(("a", "b", "c"), 4) == ["b", "c", "a"]
