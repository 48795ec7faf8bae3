"""MLflow's own Python client reads back what `promptopt optimize` recorded.

One optimization with the embedded model (SST-2 sentiment, BootstrapFewShot, a few examples) is
tracked on the MLflow server that `scripts/test.sh` starts (PROMPTOPT_TEST_MLFLOW_URI); the same run
is in the embedded store under PROMPTOPT_HOME, which MLflow reads as a file store. Checked with
`mlflow.search_runs` and `MlflowClient`: parameters, metric histories, artifacts, the registered
model version and its alias.
"""

import json
import os
import pathlib
import subprocess
import time

import mlflow
import pytest
from mlflow import MlflowClient

ROOT = pathlib.Path(__file__).resolve().parents[4]
BIN = pathlib.Path(os.environ.get("PROMPTOPT_BIN", ROOT / "target" / "debug" / "promptopt"))
SERVER = os.environ.get("PROMPTOPT_TEST_MLFLOW_URI", "")

pytestmark = pytest.mark.skipif(
    not SERVER and not os.environ.get("PROMPTOPT_CI"),
    reason="needs PROMPTOPT_TEST_MLFLOW_URI (scripts/test.sh starts the server)",
)


def head(path, n):
    with open(path) as f:
        return [next(f) for _ in range(n)]


def promptopt(home, *args):
    env = dict(os.environ, PROMPTOPT_HOME=str(home), MLFLOW_TRACKING_URI=SERVER)
    env.pop("DISABLE_MLFLOW", None)
    done = subprocess.run(
        [str(BIN), *args], env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    assert SERVER, "PROMPTOPT_TEST_MLFLOW_URI must be set in CI"
    assert BIN.exists(), f"build the binary first: {BIN}"
    home = tmp_path_factory.mktemp("home")
    data = ROOT / "examples" / "data"
    (home / "train.jsonl").write_text("".join(head(data / "sst2-train.jsonl", 8)))
    (home / "dev.jsonl").write_text("".join(head(data / "sst2-dev.jsonl", 8)))
    name = f"sst2-readback-{int(time.time() * 1000)}"
    (home / "request.yaml").write_text(
        f"""name: {name}
evaluation_metric: accuracy
algorithm: bootstrapfewshot
model: local/smollm2-135m
training_examples: train.jsonl
validation_examples: dev.jsonl
input_keys: [text]
output_keys: [label]
instructions: Classify the sentiment of the movie review sentence as positive or negative.
algorithm_config: {{max_bootstrapped_demos: 2, max_labeled_demos: 2}}
seed: 0
"""
    )
    done = promptopt(home, "optimize", str(home / "request.yaml"), "--json")
    result = json.loads(done.stdout)
    promptopt(home, "models", "promote", f"{name}@1.0.0", "--alias", "production")
    return home, name, result


def test_the_server_run_reads_back_with_mlflows_client(tracked, tmp_path):
    home, name, result = tracked
    run_id = result["mlflow_run_id"]
    mlflow.set_tracking_uri(SERVER)
    runs = mlflow.search_runs(
        experiment_names=[name],
        filter_string="params.algorithm = 'bootstrapfewshot'",
        order_by=["metrics.val_score DESC"],
    )
    assert list(runs["run_id"]) == [run_id]
    row = runs.iloc[0]
    assert row["params.task_model"] == "local/smollm2-135m"
    assert row["params.dataset.validation.examples"] == "8"
    assert row["metrics.val_score"] == pytest.approx(result["optimized_metrics"]["score"])
    assert row["metrics.baseline_score"] == pytest.approx(result["baseline_metrics"]["score"])
    assert row["tags.promptopt.model_id"] == f"{name}@1.0.0"
    assert row["status"] == "FINISHED"

    client = MlflowClient(tracking_uri=SERVER, registry_uri=SERVER)
    history = client.get_metric_history(run_id, "trial_score")
    assert len(history) >= 1
    assert [m.step for m in history] == sorted(m.step for m in history)
    paths = {a.path for a in client.list_artifacts(run_id)}
    assert {"request.json", "result.json", "optimized_prompt.txt", "trajectory.svg",
            "validation_results.jsonl", "candidates.json", "model"} <= paths
    prompt = client.download_artifacts(run_id, "optimized_prompt.txt", str(tmp_path))
    assert pathlib.Path(prompt).read_text() == result["optimized_prompt"]
    rows = pathlib.Path(
        client.download_artifacts(run_id, "validation_results.jsonl", str(tmp_path))
    ).read_text().splitlines()
    assert len(rows) == 8 and "score" in json.loads(rows[0])

    versions = client.search_model_versions(f"name='{name}'")
    assert [(v.version, v.run_id) for v in versions] == [("1", run_id)]
    assert versions[0].tags["promptopt.version"] == "1.0.0"
    assert client.get_model_version_by_alias(name, "production").version == "1"


def test_the_embedded_store_reads_back_as_an_mlflow_file_store(tracked, monkeypatch):
    home, name, result = tracked
    # MLflow 3.18 keeps file stores in maintenance mode; readers opt in.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (home / "mlruns").as_uri()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], "params.algorithm = 'bootstrapfewshot'")
    assert len(runs) == 1
    run = runs[0]
    server_run = MlflowClient(tracking_uri=SERVER).get_run(result["mlflow_run_id"])
    assert server_run.data.tags["promptopt.local_run_id"] == run.info.run_id
    assert run.data.params == {
        k: v for k, v in server_run.data.params.items()
    }
    assert run.data.metrics["val_score"] == pytest.approx(server_run.data.metrics["val_score"])
    assert len(client.get_metric_history(run.info.run_id, "trial_score")) == len(
        MlflowClient(tracking_uri=SERVER).get_metric_history(server_run.info.run_id, "trial_score")
    )
    assert "optimized_prompt.txt" in {a.path for a in client.list_artifacts(run.info.run_id)}
    version = client.get_model_version_by_alias(name, "production")
    # (the file store gives versions as numbers, as it does for its own writes)
    assert (str(version.version), version.run_id) == ("1", run.info.run_id)
