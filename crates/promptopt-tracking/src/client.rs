//! A client of MLflow's REST API: experiments, runs, batched logging, artifacts through the
//! server's artifact proxy, and the model registry.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};

use crate::{
    ArtifactEntry, Experiment, KeyValue, MetricPoint, ModelVersion, Run, RunInfo, RunQuery,
    RunStatus, TrackingError, TrackingStore,
};

/// MLflow's limits per `log-batch` call.
const MAX_METRICS_PER_BATCH: usize = 1000;
const MAX_PARAMS_PER_BATCH: usize = 100;
const MAX_TAGS_PER_BATCH: usize = 100;

/// How the client proves who it is.
#[derive(Clone)]
enum Auth {
    None,
    Bearer(String),
    Basic(String, String),
}

/// A client of one MLflow tracking server.
///
/// Credentials come from the URI's user part (`http://user:pass@host`), or from
/// `MLFLOW_TRACKING_TOKEN` (bearer) or `MLFLOW_TRACKING_USERNAME` and `MLFLOW_TRACKING_PASSWORD`
/// (basic); they are sent, never shown: [`MlflowClient::location`] and every error carry the URI
/// without them.
#[derive(Clone)]
pub struct MlflowClient {
    base: String,
    shown: String,
    auth: Auth,
    http: reqwest::Client,
}

impl std::fmt::Debug for MlflowClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MlflowClient")
            .field("uri", &self.shown)
            .finish_non_exhaustive()
    }
}

/// The URI without its user part, safe to print.
pub fn redact(uri: &str) -> String {
    match uri.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("{scheme}://{host}{path}")
        }
        None => uri.to_string(),
    }
}

fn env_nonempty(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

impl MlflowClient {
    /// A client of the server at `uri` (`http://host:port`, optionally with a path prefix).
    pub fn new(uri: &str) -> Result<Self, TrackingError> {
        let shown = redact(uri.trim_end_matches('/'));
        let invalid = |message: &str| TrackingError::InvalidUri {
            uri: shown.clone(),
            message: message.into(),
        };
        let (scheme, rest) = uri
            .trim_end_matches('/')
            .split_once("://")
            .ok_or_else(|| invalid("expected `http://host:port`"))?;
        if scheme != "http" && scheme != "https" {
            return Err(invalid("the scheme must be `http` or `https`"));
        }
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        if host.is_empty() {
            return Err(invalid("the host is missing"));
        }
        let auth = if let Some(token) = env_nonempty("MLFLOW_TRACKING_TOKEN") {
            Auth::Bearer(token)
        } else if let Some(u) = userinfo {
            let (user, pass) = u.split_once(':').unwrap_or((u, ""));
            Auth::Basic(user.to_string(), pass.to_string())
        } else if let Some(user) = env_nonempty("MLFLOW_TRACKING_USERNAME") {
            Auth::Basic(
                user,
                env_nonempty("MLFLOW_TRACKING_PASSWORD").unwrap_or_default(),
            )
        } else {
            Auth::None
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| invalid(&e.to_string()))?;
        Ok(Self {
            base: format!("{scheme}://{host}{path}"),
            shown,
            auth,
            http,
        })
    }

    fn request(&self, method: Method, endpoint: &str) -> RequestBuilder {
        let builder = self
            .http
            .request(method, format!("{}{}", self.base, endpoint));
        match &self.auth {
            Auth::None => builder,
            Auth::Bearer(token) => builder.bearer_auth(token),
            Auth::Basic(user, pass) => builder.basic_auth(user, Some(pass)),
        }
    }

    async fn send(
        &self,
        endpoint: &str,
        builder: RequestBuilder,
    ) -> Result<Vec<u8>, TrackingError> {
        let response = builder
            .send()
            .await
            .map_err(|e| TrackingError::Unreachable {
                uri: self.shown.clone(),
                // reqwest's message names the URL it tried, which is ours without credentials.
                message: without_url(&e),
            })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| TrackingError::Unreachable {
                uri: self.shown.clone(),
                message: without_url(&e),
            })?;
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let text = String::from_utf8_lossy(&bytes);
        Err(TrackingError::Api {
            uri: self.shown.clone(),
            status: status.as_u16(),
            endpoint: endpoint.to_string(),
            code: body["error_code"].as_str().unwrap_or_default().to_string(),
            message: body["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| text.chars().take(300).collect()),
        })
    }

    async fn get(&self, endpoint: &str, query: &[(&str, &str)]) -> Result<Value, TrackingError> {
        let bytes = self
            .send(endpoint, self.request(Method::GET, endpoint).query(query))
            .await?;
        self.json(endpoint, &bytes)
    }

    async fn post(&self, endpoint: &str, body: Value) -> Result<Value, TrackingError> {
        let bytes = self
            .send(endpoint, self.request(Method::POST, endpoint).json(&body))
            .await?;
        self.json(endpoint, &bytes)
    }

    fn json(&self, endpoint: &str, bytes: &[u8]) -> Result<Value, TrackingError> {
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(bytes).map_err(|e| TrackingError::Api {
            uri: self.shown.clone(),
            status: 200,
            endpoint: endpoint.to_string(),
            code: "MALFORMED_RESPONSE".into(),
            message: e.to_string(),
        })
    }

    /// Checks that the server answers (`GET /health`).
    pub async fn health(&self) -> Result<(), TrackingError> {
        self.send("/health", self.request(Method::GET, "/health"))
            .await
            .map(|_| ())
    }

    /// The proxy path of a run's artifact (`mlflow-artifacts:/...` locations only).
    fn artifact_endpoint(&self, artifact_uri: &str, path: &str) -> Result<String, TrackingError> {
        let rest = artifact_uri
            .strip_prefix("mlflow-artifacts:")
            .ok_or_else(|| TrackingError::ArtifactsNotProxied(artifact_uri.to_string()))?;
        // `mlflow-artifacts:/1/abc/artifacts` or `mlflow-artifacts://host/1/abc/artifacts`.
        let rest = match rest.strip_prefix("//") {
            Some(r) => &r[r.find('/').unwrap_or(r.len())..],
            None => rest,
        };
        Ok(format!(
            "/api/2.0/mlflow-artifacts/artifacts/{}/{}",
            rest.trim_matches('/'),
            path.trim_start_matches('/')
        ))
    }

    async fn run_info(&self, run_id: &str) -> Result<RunInfo, TrackingError> {
        Ok(self.get_run(run_id).await?.info)
    }
}

fn without_url(e: &reqwest::Error) -> String {
    let mut message = e.without_url_ref().to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        if self.is_timeout() {
            "timed out".into()
        } else if self.is_connect() {
            "connection failed".into()
        } else if self.is_body() || self.is_decode() {
            "the answer broke off".into()
        } else {
            "request failed".into()
        }
    }
}

/// An `int64` that MLflow's JSON may give as a number or a string.
fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn pairs(value: &Value) -> impl Iterator<Item = (String, String)> + '_ {
    value
        .as_array()
        .into_iter()
        .flatten()
        .map(|kv| (text(&kv["key"]), text(&kv["value"])))
}

pub(crate) fn parse_run(value: &Value) -> Option<Run> {
    let info = &value["info"];
    let status: RunStatus = serde_json::from_value(info["status"].clone()).ok()?;
    let data = &value["data"];
    Some(Run {
        info: RunInfo {
            run_id: text(&info["run_id"]),
            run_name: text(&info["run_name"]),
            experiment_id: text(&info["experiment_id"]),
            status,
            start_time: int(&info["start_time"]).unwrap_or(0),
            end_time: int(&info["end_time"]),
            artifact_uri: text(&info["artifact_uri"]),
        },
        params: pairs(&data["params"]).collect(),
        metrics: data["metrics"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| Some((text(&m["key"]), m["value"].as_f64()?)))
            .collect(),
        tags: pairs(&data["tags"]).collect(),
    })
}

fn parse_experiment(value: &Value) -> Experiment {
    Experiment {
        experiment_id: text(&value["experiment_id"]),
        name: text(&value["name"]),
        artifact_location: text(&value["artifact_location"]),
        lifecycle_stage: text(&value["lifecycle_stage"]),
    }
}

fn parse_model_version(value: &Value) -> ModelVersion {
    ModelVersion {
        name: text(&value["name"]),
        version: text(&value["version"]),
        source: text(&value["source"]),
        run_id: text(&value["run_id"]),
        aliases: value["aliases"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect(),
        tags: pairs(&value["tags"]).collect(),
    }
}

fn kv_json(items: &[KeyValue]) -> Value {
    Value::Array(
        items
            .iter()
            .map(|kv| json!({"key": kv.key, "value": kv.value}))
            .collect(),
    )
}

#[async_trait]
impl TrackingStore for MlflowClient {
    fn location(&self) -> String {
        self.shown.clone()
    }

    async fn list_experiments(&self) -> Result<Vec<Experiment>, TrackingError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut body = json!({"max_results": 1000, "view_type": "ACTIVE_ONLY"});
            if let Some(t) = &token {
                body["page_token"] = json!(t);
            }
            let page = self
                .post("/api/2.0/mlflow/experiments/search", body)
                .await?;
            out.extend(
                page["experiments"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(parse_experiment),
            );
            match page["next_page_token"].as_str() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
    }

    async fn experiment_by_name(&self, name: &str) -> Result<Option<Experiment>, TrackingError> {
        match self
            .get(
                "/api/2.0/mlflow/experiments/get-by-name",
                &[("experiment_name", name)],
            )
            .await
        {
            Ok(v) => {
                let e = parse_experiment(&v["experiment"]);
                Ok((e.lifecycle_stage != "deleted").then_some(e))
            }
            Err(TrackingError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn create_experiment(&self, name: &str) -> Result<String, TrackingError> {
        let v = self
            .post("/api/2.0/mlflow/experiments/create", json!({"name": name}))
            .await?;
        Ok(text(&v["experiment_id"]))
    }

    async fn create_run(
        &self,
        experiment_id: &str,
        run_name: &str,
        start_time: i64,
        tags: &[KeyValue],
    ) -> Result<RunInfo, TrackingError> {
        let v = self
            .post(
                "/api/2.0/mlflow/runs/create",
                json!({
                    "experiment_id": experiment_id,
                    "run_name": run_name,
                    "start_time": start_time,
                    "tags": kv_json(tags),
                }),
            )
            .await?;
        parse_run(&v["run"])
            .map(|r| r.info)
            .ok_or_else(|| TrackingError::Api {
                uri: self.shown.clone(),
                status: 200,
                endpoint: "/api/2.0/mlflow/runs/create".into(),
                code: "MALFORMED_RESPONSE".into(),
                message: "the answer has no run".into(),
            })
    }

    async fn log_batch(
        &self,
        run_id: &str,
        metrics: &[MetricPoint],
        params: &[KeyValue],
        tags: &[KeyValue],
    ) -> Result<(), TrackingError> {
        let metric_chunks: Vec<&[MetricPoint]> = metrics.chunks(MAX_METRICS_PER_BATCH).collect();
        let param_chunks: Vec<&[KeyValue]> = params.chunks(MAX_PARAMS_PER_BATCH).collect();
        let tag_chunks: Vec<&[KeyValue]> = tags.chunks(MAX_TAGS_PER_BATCH).collect();
        let calls = metric_chunks
            .len()
            .max(param_chunks.len())
            .max(tag_chunks.len());
        for i in 0..calls {
            let metrics: Vec<Value> = metric_chunks
                .get(i)
                .copied()
                .unwrap_or_default()
                .iter()
                .map(|m| {
                    json!({"key": m.key, "value": finite(m.value), "timestamp": m.timestamp, "step": m.step})
                })
                .collect();
            self.post(
                "/api/2.0/mlflow/runs/log-batch",
                json!({
                    "run_id": run_id,
                    "metrics": metrics,
                    "params": kv_json(param_chunks.get(i).copied().unwrap_or_default()),
                    "tags": kv_json(tag_chunks.get(i).copied().unwrap_or_default()),
                }),
            )
            .await?;
        }
        Ok(())
    }

    async fn update_run(
        &self,
        run_id: &str,
        status: RunStatus,
        end_time: Option<i64>,
    ) -> Result<(), TrackingError> {
        let mut body = json!({"run_id": run_id, "status": status.as_str()});
        if let Some(t) = end_time {
            body["end_time"] = json!(t);
        }
        self.post("/api/2.0/mlflow/runs/update", body).await?;
        Ok(())
    }

    async fn get_run(&self, run_id: &str) -> Result<Run, TrackingError> {
        match self
            .get("/api/2.0/mlflow/runs/get", &[("run_id", run_id)])
            .await
        {
            Ok(v) => parse_run(&v["run"]).ok_or_else(|| TrackingError::RunNotFound(run_id.into())),
            Err(TrackingError::Api { status: 404, .. }) => {
                Err(TrackingError::RunNotFound(run_id.into()))
            }
            Err(e) => Err(e),
        }
    }

    async fn search_runs(&self, query: &RunQuery) -> Result<Vec<Run>, TrackingError> {
        let experiment_ids = if query.experiment_ids.is_empty() {
            self.list_experiments()
                .await?
                .into_iter()
                .map(|e| e.experiment_id)
                .collect()
        } else {
            query.experiment_ids.clone()
        };
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let want = query
                .max_results
                .map(|m| m.saturating_sub(out.len()))
                .unwrap_or(1000)
                .min(1000);
            if want == 0 {
                return Ok(out);
            }
            let mut body = json!({
                "experiment_ids": experiment_ids,
                "order_by": query.order_by,
                "max_results": want,
                "run_view_type": "ACTIVE_ONLY",
            });
            if let Some(f) = &query.filter {
                body["filter"] = json!(f);
            }
            if let Some(t) = &token {
                body["page_token"] = json!(t);
            }
            let page = match self.post("/api/2.0/mlflow/runs/search", body).await {
                Err(TrackingError::Api {
                    status: 400,
                    message,
                    ..
                }) => {
                    return Err(TrackingError::Search {
                        what: "filter",
                        text: query.filter.clone().unwrap_or_default(),
                        message,
                    })
                }
                other => other?,
            };
            out.extend(
                page["runs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(parse_run),
            );
            match page["next_page_token"].as_str() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
    }

    async fn metric_history(
        &self,
        run_id: &str,
        key: &str,
    ) -> Result<Vec<MetricPoint>, TrackingError> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let mut query = vec![
                ("run_id", run_id),
                ("metric_key", key),
                ("max_results", "25000"),
            ];
            if !token.is_empty() {
                query.push(("page_token", &token));
            }
            let v = self
                .get("/api/2.0/mlflow/metrics/get-history", &query)
                .await?;
            out.extend(
                v["metrics"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|m| {
                        Some(MetricPoint {
                            key: text(&m["key"]),
                            value: m["value"].as_f64()?,
                            timestamp: int(&m["timestamp"]).unwrap_or(0),
                            step: int(&m["step"]).unwrap_or(0),
                        })
                    }),
            );
            match v["next_page_token"].as_str() {
                Some(t) if !t.is_empty() => token = t.to_string(),
                _ => return Ok(out),
            }
        }
    }

    async fn upload_artifact(
        &self,
        run: &RunInfo,
        path: &str,
        bytes: Vec<u8>,
    ) -> Result<(), TrackingError> {
        let endpoint = self.artifact_endpoint(&run.artifact_uri, path)?;
        self.send(
            &endpoint,
            self.request(Method::PUT, &endpoint)
                .header("Content-Type", "application/octet-stream")
                .body(bytes),
        )
        .await?;
        Ok(())
    }

    async fn list_artifacts(&self, run_id: &str) -> Result<Vec<ArtifactEntry>, TrackingError> {
        let mut out = Vec::new();
        let mut folders = vec![String::new()];
        while let Some(folder) = folders.pop() {
            let mut query = vec![("run_id", run_id)];
            if !folder.is_empty() {
                query.push(("path", folder.as_str()));
            }
            let v = self.get("/api/2.0/mlflow/artifacts/list", &query).await?;
            for f in v["files"].as_array().into_iter().flatten() {
                let entry = ArtifactEntry {
                    path: text(&f["path"]),
                    is_dir: f["is_dir"].as_bool().unwrap_or(false),
                    file_size: int(&f["file_size"]).map(|s| s as u64),
                };
                if entry.is_dir {
                    folders.push(entry.path.clone());
                } else {
                    out.push(entry);
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    async fn download_artifact(&self, run_id: &str, path: &str) -> Result<Vec<u8>, TrackingError> {
        let info = self.run_info(run_id).await?;
        let endpoint = self.artifact_endpoint(&info.artifact_uri, path)?;
        match self
            .send(&endpoint, self.request(Method::GET, &endpoint))
            .await
        {
            Err(TrackingError::Api { status: 404, .. }) => Err(TrackingError::ArtifactNotFound {
                run_id: run_id.into(),
                path: path.into(),
            }),
            other => other,
        }
    }

    async fn create_model_version(
        &self,
        name: &str,
        source: &str,
        run_id: &str,
        tags: &[KeyValue],
    ) -> Result<ModelVersion, TrackingError> {
        match self
            .post(
                "/api/2.0/mlflow/registered-models/create",
                json!({"name": name}),
            )
            .await
        {
            Ok(_) => {}
            Err(TrackingError::Api { code, .. }) if code == "RESOURCE_ALREADY_EXISTS" => {}
            Err(e) => return Err(e),
        }
        let v = self
            .post(
                "/api/2.0/mlflow/model-versions/create",
                json!({"name": name, "source": source, "run_id": run_id, "tags": kv_json(tags)}),
            )
            .await?;
        Ok(parse_model_version(&v["model_version"]))
    }

    async fn model_versions(&self, name: &str) -> Result<Vec<ModelVersion>, TrackingError> {
        let filter = format!("name='{}'", name.replace('\'', "\\'"));
        let mut out: Vec<ModelVersion> = Vec::new();
        let mut token = String::new();
        loop {
            let mut query = vec![("filter", filter.as_str()), ("max_results", "1000")];
            if !token.is_empty() {
                query.push(("page_token", &token));
            }
            let v = self
                .get("/api/2.0/mlflow/model-versions/search", &query)
                .await?;
            out.extend(
                v["model_versions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(parse_model_version),
            );
            match v["next_page_token"].as_str() {
                Some(t) if !t.is_empty() => token = t.to_string(),
                _ => break,
            }
        }
        // Search results carry no aliases: read them from the registered model.
        if !out.is_empty() {
            let m = self
                .get("/api/2.0/mlflow/registered-models/get", &[("name", name)])
                .await?;
            for a in m["registered_model"]["aliases"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let (alias, version) = (text(&a["alias"]), text(&a["version"]));
                if let Some(v) = out.iter_mut().find(|v| v.version == version) {
                    if !v.aliases.contains(&alias) {
                        v.aliases.push(alias);
                    }
                }
            }
        }
        out.sort_by_key(|v| v.version.parse::<u64>().unwrap_or(0));
        Ok(out)
    }

    async fn set_model_alias(
        &self,
        name: &str,
        alias: &str,
        version: &str,
    ) -> Result<(), TrackingError> {
        self.post(
            "/api/2.0/mlflow/registered-models/alias",
            json!({"name": name, "alias": alias, "version": version}),
        )
        .await?;
        Ok(())
    }
}

/// MLflow's JSON has no NaN or infinity; such values are sent as the nearest finite number.
fn finite(value: f64) -> f64 {
    if value.is_nan() {
        0.0
    } else {
        value.clamp(f64::MIN, f64::MAX)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn redact_drops_credentials_only() {
        assert_eq!(redact("http://u:secret@h:5000/p"), "http://h:5000/p");
        assert_eq!(redact("https://h"), "https://h");
        assert_eq!(redact("http://h:1/a@b"), "http://h:1/a@b");
    }

    #[test]
    fn bad_uris_are_named() {
        let e = MlflowClient::new("ftp://u:pw@h").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("ftp://h"), "{text}");
        assert!(!text.contains("pw"), "{text}");
        assert!(MlflowClient::new("http://").is_err());
    }

    #[test]
    fn artifact_paths_follow_the_proxy() {
        let c = MlflowClient::new("http://127.0.0.1:5000").unwrap();
        assert_eq!(
            c.artifact_endpoint("mlflow-artifacts:/3/abc/artifacts", "model/x.json")
                .unwrap(),
            "/api/2.0/mlflow-artifacts/artifacts/3/abc/artifacts/model/x.json"
        );
        assert_eq!(
            c.artifact_endpoint("mlflow-artifacts://host:5000/3/abc/artifacts", "a.txt")
                .unwrap(),
            "/api/2.0/mlflow-artifacts/artifacts/3/abc/artifacts/a.txt"
        );
        assert!(matches!(
            c.artifact_endpoint("/srv/mlruns/3/abc/artifacts", "a.txt"),
            Err(TrackingError::ArtifactsNotProxied(_))
        ));
    }
}
