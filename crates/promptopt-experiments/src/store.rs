//! Where experiments, predictions and outcomes live: SQLite (a file; the default) or PostgreSQL,
//! through one set of plain SQL statements that both run.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::AnyPool;
use sqlx::Row;

use crate::{Experiment, ExperimentError, ExperimentState};

/// The schema, in order; each runs once (recorded in `promptopt_migrations`).
const MIGRATIONS: [(i64, &str); 2] = [
    (1, include_str!("../migrations/0001_experiments.sql")),
    (2, include_str!("../migrations/0002_learning.sql")),
];

/// A prediction as served: what a later outcome is attached to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionRecord {
    /// The id returned to the caller.
    pub prediction_id: String,
    /// `name@version` that answered.
    pub model_id: String,
    /// The experiment that routed it, if one did.
    pub experiment_id: Option<String>,
    /// Its variant there.
    pub variant: Option<String>,
    /// The caller's unit (user or session) id.
    pub unit_id: Option<String>,
    /// The input fields.
    pub inputs: Value,
    /// The output fields.
    pub outputs: Value,
    /// When it was served.
    pub created_at: f64,
    /// Time taken, in milliseconds.
    #[serde(default)]
    pub latency_ms: Option<f64>,
    /// Prompt tokens spent.
    #[serde(default)]
    pub prompt_tokens: Option<u64>,
    /// Generated tokens.
    #[serde(default)]
    pub completion_tokens: Option<u64>,
    /// Cost in USD, when the model's price is known.
    #[serde(default)]
    pub cost_usd: Option<f64>,
}

impl PredictionRecord {
    /// The model's name (`model_id` without `@version`).
    pub fn model(&self) -> &str {
        self.model_id
            .split_once('@')
            .map_or(self.model_id.as_str(), |(name, _)| name)
    }
}

/// One variant's running sums.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VariantStats {
    /// The variant.
    pub variant: String,
    /// Units assigned (distinct unit ids, or requests without one).
    pub units: u64,
    /// Predictions with an outcome.
    pub outcomes: u64,
    /// Sum of the outcomes' scores.
    pub score_sum: f64,
    /// Sum of their squares.
    pub score_sq_sum: f64,
    /// Outcomes whose score is 0 or 1.
    pub binary_outcomes: u64,
}

/// What recording one outcome did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedbackRecorded {
    /// Whether it was the prediction's first outcome (a later one replaces it, counted once).
    pub first: bool,
    /// How many outcomes were received for the prediction, this one included.
    pub received: i64,
}

/// The store.
#[derive(Debug, Clone)]
pub struct ExperimentStore {
    pub(crate) pool: AnyPool,
    url: String,
}

/// `url` without a password.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

fn db_error(url: &str, e: impl std::fmt::Display) -> ExperimentError {
    ExperimentError::Database {
        url: redact(url),
        message: e.to_string(),
    }
}

fn experiment_of(row: &AnyRow, url: &str) -> Result<Experiment, ExperimentError> {
    let record: String = row.try_get("record").map_err(|e| db_error(url, e))?;
    serde_json::from_str(&record)
        .map_err(|e| db_error(url, format!("an experiment record does not parse: {e}")))
}

pub(crate) fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl ExperimentStore {
    /// Opens (and creates, for SQLite) the database at `url`: `sqlite:PATH` or
    /// `postgres://USER:PASSWORD@HOST:PORT/DB`; the schema is brought up to date.
    pub async fn open(url: &str) -> Result<Self, ExperimentError> {
        sqlx::any::install_default_drivers();
        let (connect, max) = if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.trim_start_matches("//");
            if let Some(parent) = std::path::Path::new(path).parent() {
                if !parent.as_os_str().is_empty() {
                    std::fs::create_dir_all(parent).map_err(|e| db_error(url, e))?;
                }
            }
            // One connection: SQLite has one writer at a time anyway.
            (format!("sqlite://{path}?mode=rwc"), 1)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (url.to_string(), 8)
        } else {
            return Err(ExperimentError::Database {
                url: redact(url),
                message: "the database must be `sqlite:PATH` or `postgres://...`".into(),
            });
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(&connect)
            .await
            .map_err(|e| db_error(url, e))?;
        let store = Self {
            pool,
            url: url.to_string(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Where it lives, without a password.
    pub fn url(&self) -> String {
        redact(&self.url)
    }

    pub(crate) fn err(&self, e: impl std::fmt::Display) -> ExperimentError {
        db_error(&self.url, e)
    }

    async fn migrate(&self) -> Result<(), ExperimentError> {
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        sqlx::query("CREATE TABLE IF NOT EXISTS promptopt_migrations (version BIGINT PRIMARY KEY)")
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        for (version, sql) in MIGRATIONS {
            let done = sqlx::query("SELECT version FROM promptopt_migrations WHERE version = $1")
                .bind(version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
            if done.is_some() {
                continue;
            }
            // Comment lines go first, so that a `;` in a comment does not split a statement.
            let code: String = sql
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n");
            for statement in code.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                sqlx::query(statement)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.err(format!("migration {version}: {e}")))?;
            }
            sqlx::query("INSERT INTO promptopt_migrations (version) VALUES ($1)")
                .bind(version)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))
    }

    /// Stores a new experiment (one transaction: nothing is half-written).
    pub async fn insert(&self, experiment: &Experiment) -> Result<(), ExperimentError> {
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        let taken = sqlx::query("SELECT id FROM experiments WHERE name = $1")
            .bind(&experiment.spec.name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        if taken.is_some() {
            return Err(ExperimentError::NameTaken(experiment.spec.name.clone()));
        }
        let record = serde_json::to_string(experiment).map_err(|e| self.err(e))?;
        sqlx::query(
            "INSERT INTO experiments (id, name, model, state, record, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&experiment.id)
        .bind(&experiment.spec.name)
        .bind(&experiment.model)
        .bind(experiment.state.as_str())
        .bind(record)
        .bind(experiment.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        for variant in experiment.spec.variants.keys() {
            sqlx::query(
                "INSERT INTO variant_stats (experiment_id, variant, units, outcomes, score_sum, score_sq_sum, binary_outcomes) VALUES ($1, $2, 0, 0, 0.0, 0.0, 0)",
            )
            .bind(&experiment.id)
            .bind(variant)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))
    }

    /// Writes an experiment's record back (state, winner, sequential evidence).
    pub async fn update(&self, experiment: &Experiment) -> Result<(), ExperimentError> {
        let record = serde_json::to_string(experiment).map_err(|e| self.err(e))?;
        sqlx::query("UPDATE experiments SET state = $1, record = $2 WHERE id = $3")
            .bind(experiment.state.as_str())
            .bind(record)
            .bind(&experiment.id)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Starts an experiment, refused while another one runs on the same model.
    pub async fn start(&self, key: &str, now: f64) -> Result<Experiment, ExperimentError> {
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        let row = sqlx::query("SELECT record FROM experiments WHERE id = $1 OR name = $2")
            .bind(key)
            .bind(key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.err(e))?
            .ok_or_else(|| ExperimentError::NotFound(key.to_string()))?;
        let mut experiment = experiment_of(&row, &self.url)?;
        if experiment.state != ExperimentState::Draft {
            return Err(ExperimentError::WrongState {
                name: experiment.spec.name.clone(),
                state: experiment.state.to_string(),
                message: "only a draft experiment can start".into(),
            });
        }
        let other = sqlx::query(
            "SELECT name FROM experiments WHERE model = $1 AND state = $2 AND id <> $3",
        )
        .bind(&experiment.model)
        .bind(ExperimentState::Running.as_str())
        .bind(&experiment.id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        if let Some(row) = other {
            let other: String = row.try_get("name").map_err(|e| self.err(e))?;
            return Err(ExperimentError::AlreadyRunning {
                model: experiment.model.clone(),
                other,
            });
        }
        experiment.state = ExperimentState::Running;
        experiment.started_at = Some(now);
        let record = serde_json::to_string(&experiment).map_err(|e| self.err(e))?;
        sqlx::query("UPDATE experiments SET state = $1, record = $2 WHERE id = $3")
            .bind(experiment.state.as_str())
            .bind(record)
            .bind(&experiment.id)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(experiment)
    }

    /// An experiment by id or name.
    pub async fn get(&self, key: &str) -> Result<Experiment, ExperimentError> {
        let row = sqlx::query("SELECT record FROM experiments WHERE id = $1 OR name = $2")
            .bind(key)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e))?
            .ok_or_else(|| ExperimentError::NotFound(key.to_string()))?;
        experiment_of(&row, &self.url)
    }

    /// Every experiment, newest first.
    pub async fn list(&self) -> Result<Vec<Experiment>, ExperimentError> {
        let rows = sqlx::query("SELECT record FROM experiments ORDER BY created_at DESC")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        rows.iter().map(|r| experiment_of(r, &self.url)).collect()
    }

    /// The running experiments.
    pub async fn running(&self) -> Result<Vec<Experiment>, ExperimentError> {
        let rows = sqlx::query("SELECT record FROM experiments WHERE state = $1")
            .bind(ExperimentState::Running.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        rows.iter().map(|r| experiment_of(r, &self.url)).collect()
    }

    /// Stores served predictions and counts each new unit of an experiment once (one
    /// transaction for the batch).
    pub async fn record_predictions(
        &self,
        rows: &[PredictionRecord],
    ) -> Result<(), ExperimentError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        for p in rows {
            sqlx::query(
                "INSERT INTO predictions (prediction_id, model_id, experiment_id, variant, unit_id, inputs, outputs, created_at, model, latency_ms, prompt_tokens, completion_tokens, cost_usd) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT (prediction_id) DO NOTHING",
            )
            .bind(&p.prediction_id)
            .bind(&p.model_id)
            .bind(p.experiment_id.clone())
            .bind(p.variant.clone())
            .bind(p.unit_id.clone())
            .bind(p.inputs.to_string())
            .bind(p.outputs.to_string())
            .bind(p.created_at)
            .bind(p.model().to_string())
            .bind(p.latency_ms)
            .bind(p.prompt_tokens.map(|t| i64::try_from(t).unwrap_or(i64::MAX)))
            .bind(p.completion_tokens.map(|t| i64::try_from(t).unwrap_or(i64::MAX)))
            .bind(p.cost_usd)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
            if let (Some(experiment), Some(variant)) = (&p.experiment_id, &p.variant) {
                let unit = p.unit_id.clone().map_or_else(
                    || format!("request:{}", p.prediction_id),
                    |u| format!("unit:{u}"),
                );
                let inserted = sqlx::query(
                    "INSERT INTO exposures (experiment_id, unit_key, variant) VALUES ($1, $2, $3) ON CONFLICT (experiment_id, unit_key) DO NOTHING",
                )
                .bind(experiment)
                .bind(unit)
                .bind(variant)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?
                .rows_affected();
                if inserted > 0 {
                    sqlx::query("UPDATE variant_stats SET units = units + 1 WHERE experiment_id = $1 AND variant = $2")
                        .bind(experiment)
                        .bind(variant)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| self.err(e))?;
                }
            }
        }
        tx.commit().await.map_err(|e| self.err(e))
    }

    /// A served prediction.
    pub async fn prediction(&self, id: &str) -> Result<Option<PredictionRecord>, ExperimentError> {
        let row = sqlx::query(
            "SELECT prediction_id, model_id, experiment_id, variant, unit_id, inputs, outputs, created_at, latency_ms, prompt_tokens, completion_tokens, cost_usd FROM predictions WHERE prediction_id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let Some(row) = row else { return Ok(None) };
        let text = |name: &str| -> Result<String, ExperimentError> {
            row.try_get(name).map_err(|e| self.err(e))
        };
        let opt = |name: &str| -> Result<Option<String>, ExperimentError> {
            row.try_get(name).map_err(|e| self.err(e))
        };
        Ok(Some(PredictionRecord {
            prediction_id: text("prediction_id")?,
            model_id: text("model_id")?,
            experiment_id: opt("experiment_id")?,
            variant: opt("variant")?,
            unit_id: opt("unit_id")?,
            inputs: serde_json::from_str(&text("inputs")?).unwrap_or(Value::Null),
            outputs: serde_json::from_str(&text("outputs")?).unwrap_or(Value::Null),
            created_at: row.try_get("created_at").map_err(|e| self.err(e))?,
            latency_ms: row.try_get("latency_ms").map_err(|e| self.err(e))?,
            prompt_tokens: row
                .try_get::<Option<i64>, _>("prompt_tokens")
                .map_err(|e| self.err(e))?
                .map(u64_of),
            completion_tokens: row
                .try_get::<Option<i64>, _>("completion_tokens")
                .map_err(|e| self.err(e))?
                .map(u64_of),
            cost_usd: row.try_get("cost_usd").map_err(|e| self.err(e))?,
        }))
    }

    /// Records an outcome of `prediction`: the first is counted; a later one replaces it (the
    /// last write wins) without being counted again. One transaction with the variant's sums.
    pub async fn record_feedback(
        &self,
        prediction: &PredictionRecord,
        score: f64,
        detail: &Value,
        now: f64,
    ) -> Result<FeedbackRecorded, ExperimentError> {
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        let old = sqlx::query("SELECT score, received FROM feedback WHERE prediction_id = $1")
            .bind(&prediction.prediction_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        let is_binary = |s: f64| i64::from(s == 0.0 || s == 1.0);
        let (first, received, d_outcomes, d_sum, d_sq, d_binary) = match old {
            None => {
                sqlx::query(
                    "INSERT INTO feedback (prediction_id, score, detail, received, updated_at) VALUES ($1, $2, $3, 1, $4)",
                )
                .bind(&prediction.prediction_id)
                .bind(score)
                .bind(detail.to_string())
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
                (true, 1, 1i64, score, score * score, is_binary(score))
            }
            Some(row) => {
                let previous: f64 = row.try_get("score").map_err(|e| self.err(e))?;
                let received: i64 = row.try_get("received").map_err(|e| self.err(e))?;
                sqlx::query(
                    "UPDATE feedback SET score = $1, detail = $2, received = $3, updated_at = $4 WHERE prediction_id = $5",
                )
                .bind(score)
                .bind(detail.to_string())
                .bind(received + 1)
                .bind(now)
                .bind(&prediction.prediction_id)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
                (
                    false,
                    received + 1,
                    0,
                    score - previous,
                    score * score - previous * previous,
                    is_binary(score) - is_binary(previous),
                )
            }
        };
        if let (Some(experiment), Some(variant)) = (&prediction.experiment_id, &prediction.variant)
        {
            sqlx::query(
                "UPDATE variant_stats SET outcomes = outcomes + $1, score_sum = score_sum + $2, score_sq_sum = score_sq_sum + $3, binary_outcomes = binary_outcomes + $4 WHERE experiment_id = $5 AND variant = $6",
            )
            .bind(d_outcomes)
            .bind(d_sum)
            .bind(d_sq)
            .bind(d_binary)
            .bind(experiment)
            .bind(variant)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(FeedbackRecorded { first, received })
    }

    /// Each variant's sums, in no particular order.
    pub async fn variant_stats(
        &self,
        experiment_id: &str,
    ) -> Result<Vec<VariantStats>, ExperimentError> {
        let rows = sqlx::query(
            "SELECT variant, units, outcomes, score_sum, score_sq_sum, binary_outcomes FROM variant_stats WHERE experiment_id = $1",
        )
        .bind(experiment_id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|row| {
                let get_i = |n: &str| -> Result<i64, ExperimentError> {
                    row.try_get(n).map_err(|e| self.err(e))
                };
                let get_f = |n: &str| -> Result<f64, ExperimentError> {
                    row.try_get(n).map_err(|e| self.err(e))
                };
                Ok(VariantStats {
                    variant: row.try_get("variant").map_err(|e| self.err(e))?,
                    units: u64_of(get_i("units")?),
                    outcomes: u64_of(get_i("outcomes")?),
                    score_sum: get_f("score_sum")?,
                    score_sq_sum: get_f("score_sq_sum")?,
                    binary_outcomes: u64_of(get_i("binary_outcomes")?),
                })
            })
            .collect()
    }

    /// The outcomes of `experiment_id`'s predictions as `(variant, score, recorded at)`, oldest
    /// first, at most `limit` (the newest are left out beyond it).
    pub async fn experiment_outcomes(
        &self,
        experiment_id: &str,
        limit: usize,
    ) -> Result<Vec<(String, f64, f64)>, ExperimentError> {
        let rows = sqlx::query(
            "SELECT p.variant, f.score, f.updated_at FROM feedback f JOIN predictions p ON p.prediction_id = f.prediction_id WHERE p.experiment_id = $1 AND p.variant IS NOT NULL ORDER BY f.updated_at, p.prediction_id LIMIT $2",
        )
        .bind(experiment_id)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|row| {
                Ok((
                    self.col(row, "variant")?,
                    self.col(row, "score")?,
                    self.col(row, "updated_at")?,
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redact("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(
            super::redact("sqlite:/tmp/x.sqlite"),
            "sqlite:/tmp/x.sqlite"
        );
    }
}
