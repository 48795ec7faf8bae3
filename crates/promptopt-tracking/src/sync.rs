//! Copying runs from the embedded store to a tracking server, idempotently: a run already
//! there (found by its `promptopt.local_run_id` tag) only gets what it lacks, so replaying a
//! sync never duplicates metrics, artifacts or model versions.

use std::collections::{BTreeMap, HashSet};

use crate::local::LocalStore;
use crate::{KeyValue, MetricPoint, RunQuery, TrackingError, TrackingStore};

/// What one run's sync sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// The run's id in the embedded store.
    pub local_run_id: String,
    /// Its id on the server.
    pub remote_run_id: String,
    /// Whether the server's run was created by this sync.
    pub created: bool,
    /// Metric values sent.
    pub metrics: usize,
    /// Parameters sent.
    pub params: usize,
    /// Artifacts sent.
    pub artifacts: usize,
    /// Model versions registered.
    pub model_versions: usize,
}

/// The server run that mirrors a local run, if there is one.
async fn find_remote(
    remote: &dyn TrackingStore,
    experiment_id: &str,
    local_run_id: &str,
) -> Result<Option<crate::Run>, TrackingError> {
    let runs = remote
        .search_runs(&RunQuery {
            experiment_ids: vec![experiment_id.to_string()],
            filter: Some(format!("tags.`promptopt.local_run_id` = '{local_run_id}'")),
            order_by: Vec::new(),
            max_results: Some(1),
        })
        .await?;
    Ok(runs.into_iter().next())
}

/// Sends one run of `local` to `remote` (creating its experiment and run when missing) with
/// everything the server lacks.
pub async fn sync_run(
    local: &LocalStore,
    remote: &dyn TrackingStore,
    local_run_id: &str,
) -> Result<SyncReport, TrackingError> {
    let run = local.get_run(local_run_id).await?;
    let experiment = local
        .list_experiments()
        .await?
        .into_iter()
        .find(|e| e.experiment_id == run.info.experiment_id)
        .ok_or_else(|| TrackingError::ExperimentNotFound(run.info.experiment_id.clone()))?;
    let experiment_id = remote.get_or_create_experiment(&experiment.name).await?;
    let mut report = SyncReport {
        local_run_id: local_run_id.to_string(),
        ..SyncReport::default()
    };
    let target = match find_remote(remote, &experiment_id, local_run_id).await? {
        Some(r) => r,
        None => {
            report.created = true;
            let info = remote
                .create_run(
                    &experiment_id,
                    &run.info.run_name,
                    run.info.start_time,
                    &[KeyValue::new("promptopt.local_run_id", local_run_id)],
                )
                .await?;
            crate::Run {
                info,
                params: BTreeMap::new(),
                metrics: BTreeMap::new(),
                tags: BTreeMap::new(),
            }
        }
    };
    report.remote_run_id = target.info.run_id.clone();

    let params: Vec<KeyValue> = run
        .params
        .iter()
        .filter(|(k, _)| !target.params.contains_key(*k))
        .map(|(k, v)| KeyValue::new(k, v))
        .collect();
    let tags: Vec<KeyValue> = run
        .tags
        .iter()
        .filter(|(k, v)| target.tags.get(*k) != Some(v) && k.as_str() != "promptopt.sync_pending")
        .map(|(k, v)| KeyValue::new(k, v))
        .collect();
    let mut metrics: Vec<MetricPoint> = Vec::new();
    for key in run.metrics.keys() {
        // MLflow keeps one copy of identical values, so identical local values count once.
        let mut have: HashSet<(i64, i64, String)> = if target.metrics.contains_key(key) {
            remote
                .metric_history(&target.info.run_id, key)
                .await?
                .into_iter()
                .map(|p| (p.step, p.timestamp, same_value(p.value)))
                .collect()
        } else {
            HashSet::new()
        };
        metrics.extend(
            local
                .metric_history(local_run_id, key)
                .await?
                .into_iter()
                .filter(|p| have.insert((p.step, p.timestamp, same_value(p.value)))),
        );
    }
    report.params = params.len();
    report.metrics = metrics.len();
    remote
        .log_batch(&target.info.run_id, &metrics, &params, &tags)
        .await?;

    let present: BTreeMap<String, Option<u64>> = if report.created {
        BTreeMap::new()
    } else {
        remote
            .list_artifacts(&target.info.run_id)
            .await?
            .into_iter()
            .map(|a| (a.path, a.file_size))
            .collect()
    };
    for entry in local.list_artifacts(local_run_id).await? {
        let size = |s: Option<u64>| s.unwrap_or(0);
        if present.get(&entry.path).map(|s| size(*s)) == Some(size(entry.file_size)) {
            continue;
        }
        let bytes = local.download_artifact(local_run_id, &entry.path).await?;
        remote
            .upload_artifact(&target.info, &entry.path, bytes)
            .await?;
        report.artifacts += 1;
    }

    // Model versions this run produced, with their aliases.
    for (name, version) in local_versions_of(local, local_run_id).await? {
        let id = version.tags.get("promptopt.model_id").cloned();
        let existing = remote.model_versions(&name).await?;
        let mirrored = existing
            .iter()
            .find(|v| id.is_some() && v.tags.get("promptopt.model_id") == id.as_ref());
        let remote_version = match mirrored {
            Some(v) => v.version.clone(),
            None => {
                let tags: Vec<KeyValue> = version
                    .tags
                    .iter()
                    .map(|(k, v)| KeyValue::new(k, v))
                    .collect();
                let source = format!("runs:/{}/model", target.info.run_id);
                report.model_versions += 1;
                remote
                    .create_model_version(&name, &source, &target.info.run_id, &tags)
                    .await?
                    .version
            }
        };
        for alias in &version.aliases {
            remote
                .set_model_alias(&name, alias, &remote_version)
                .await?;
        }
    }

    remote
        .update_run(&target.info.run_id, run.info.status, run.info.end_time)
        .await?;
    if run.tags.contains_key("promptopt.sync_pending") {
        local
            .log_batch(
                local_run_id,
                &[],
                &[],
                &[KeyValue::new("promptopt.sync_pending", "")],
            )
            .await?;
    }
    Ok(report)
}

async fn local_versions_of(
    local: &LocalStore,
    run_id: &str,
) -> Result<Vec<(String, crate::ModelVersion)>, TrackingError> {
    let mut out = Vec::new();
    for name in local.model_names()? {
        for v in local.model_versions(&name).await? {
            if v.run_id == run_id {
                out.push((name.clone(), v));
            }
        }
    }
    Ok(out)
}

/// Points `alias` of registered model `name` at the version registered for the promptopt
/// version `version` (tag `promptopt.version`). Returns whether such a version exists.
pub async fn mirror_alias(
    store: &dyn TrackingStore,
    name: &str,
    alias: &str,
    version: &str,
) -> Result<bool, TrackingError> {
    let versions = store.model_versions(name).await?;
    let Some(v) = versions
        .iter()
        .rev()
        .find(|v| v.tags.get("promptopt.version").map(String::as_str) == Some(version))
    else {
        return Ok(false);
    };
    store.set_model_alias(name, alias, &v.version).await?;
    Ok(true)
}

/// A metric value as sync compares it: 12 significant digits, so that a value read back through
/// JSON one unit in the last place off (a float's decimal text is not always parsed back to the
/// same bits) still counts as the same.
fn same_value(value: f64) -> String {
    format!("{value:.11e}")
}

#[cfg(test)]
mod tests {
    use super::same_value;

    #[test]
    fn values_one_ulp_apart_are_the_same_and_others_differ() {
        let v = 0.123_456_789_012_345_f64;
        let next = f64::from_bits(v.to_bits() + 1);
        assert_eq!(same_value(v), same_value(next));
        assert_ne!(same_value(0.5), same_value(0.500_001));
    }
}
