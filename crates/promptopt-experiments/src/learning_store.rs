//! The continuous-learning tables of the server's database: each model's loop settings and
//! state, the decisions it took, the lock that lets one server at a time run a model's loop, and
//! the outcomes joined to the predictions they judge.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::store::u64_of;
use crate::{ExperimentError, ExperimentStore};

/// A model's loop as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct LearningRow {
    /// The model.
    pub model: String,
    /// Its `learning:` settings, as JSON.
    pub config: Value,
    /// Whether the loop runs.
    pub enabled: bool,
    /// Its state, as JSON.
    pub state: Value,
    /// When the row last changed.
    pub updated_at: f64,
}

/// A decision of the loop, with its reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearningEvent {
    /// Its id.
    pub event_id: String,
    /// The model.
    pub model: String,
    /// When (seconds since the epoch).
    pub at: f64,
    /// `enabled`, `disabled`, `drift`, `trigger`, `retrain_submitted`, `retrain_failed`,
    /// `validated`, `rejected`, `deployed`, `experiment_started`, `experiment_concluded`,
    /// `guard_passed`, `rolled_back`, `production_changed`.
    pub kind: String,
    /// Why, in words.
    pub reason: String,
    /// The figures behind it.
    pub detail: Value,
}

/// An outcome joined to its prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The prediction.
    pub prediction_id: String,
    /// `name@version` that answered.
    pub model_id: String,
    /// The inputs logged (after redaction).
    pub inputs: Value,
    /// The outputs served.
    pub outputs: Value,
    /// The outcome's score.
    pub score: f64,
    /// What the caller sent (`expected_output`, `score` or `success`).
    pub detail: Value,
    /// When the outcome was (last) recorded.
    pub updated_at: f64,
}

/// What a recent prediction looked like (for input and output drift).
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    /// `name@version`.
    pub model_id: String,
    /// The inputs logged.
    pub inputs: Value,
    /// The outputs served.
    pub outputs: Value,
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

impl ExperimentStore {
    /// A column of `row`.
    pub(crate) fn col<'r, T>(&self, row: &'r AnyRow, name: &str) -> Result<T, ExperimentError>
    where
        T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
    {
        row.try_get(name).map_err(|e| self.err(e))
    }

    /// A column holding JSON text.
    fn json_col(&self, row: &AnyRow, name: &str) -> Result<Value, ExperimentError> {
        Ok(json_of(&self.col::<String>(row, name)?))
    }

    fn learning_row(&self, row: &AnyRow) -> Result<LearningRow, ExperimentError> {
        let enabled: i64 = self.col(row, "enabled")?;
        Ok(LearningRow {
            model: self.col(row, "model")?,
            config: self.json_col(row, "config")?,
            enabled: enabled != 0,
            state: self.json_col(row, "state")?,
            updated_at: self.col(row, "updated_at")?,
        })
    }

    /// Every model with loop settings.
    pub async fn learning_rows(&self) -> Result<Vec<LearningRow>, ExperimentError> {
        let rows = sqlx::query(
            "SELECT model, config, enabled, state, updated_at FROM learning ORDER BY model",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter().map(|r| self.learning_row(r)).collect()
    }

    /// One model's loop.
    pub async fn learning(&self, model: &str) -> Result<Option<LearningRow>, ExperimentError> {
        let row = sqlx::query(
            "SELECT model, config, enabled, state, updated_at FROM learning WHERE model = $1",
        )
        .bind(model)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        row.map(|r| self.learning_row(&r)).transpose()
    }

    /// Stores a model's settings and whether its loop runs, keeping its state (a new row
    /// starts with `initial_state`).
    pub async fn set_learning(
        &self,
        model: &str,
        config: &Value,
        enabled: bool,
        initial_state: &Value,
        now: f64,
    ) -> Result<(), ExperimentError> {
        sqlx::query(
            "INSERT INTO learning (model, config, enabled, state, updated_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (model) DO UPDATE SET config = $2, enabled = $3, updated_at = $5",
        )
        .bind(model)
        .bind(config.to_string())
        .bind(i64::from(enabled))
        .bind(initial_state.to_string())
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Turns a model's loop on or off; `false` when it has no settings.
    pub async fn enable_learning(
        &self,
        model: &str,
        enabled: bool,
        now: f64,
    ) -> Result<bool, ExperimentError> {
        let done =
            sqlx::query("UPDATE learning SET enabled = $1, updated_at = $2 WHERE model = $3")
                .bind(i64::from(enabled))
                .bind(now)
                .bind(model)
                .execute(&self.pool)
                .await
                .map_err(|e| self.err(e))?;
        Ok(done.rows_affected() > 0)
    }

    /// Stores a model's loop state.
    pub async fn save_learning_state(
        &self,
        model: &str,
        state: &Value,
        now: f64,
    ) -> Result<(), ExperimentError> {
        sqlx::query("UPDATE learning SET state = $1, updated_at = $2 WHERE model = $3")
            .bind(state.to_string())
            .bind(now)
            .bind(model)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records a decision.
    pub async fn record_learning_event(
        &self,
        event: &LearningEvent,
    ) -> Result<(), ExperimentError> {
        sqlx::query(
            "INSERT INTO learning_events (event_id, model, at, kind, reason, detail) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&event.event_id)
        .bind(&event.model)
        .bind(event.at)
        .bind(&event.kind)
        .bind(&event.reason)
        .bind(event.detail.to_string())
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// A model's decisions, oldest first; the newest `limit` of them.
    pub async fn learning_events(
        &self,
        model: &str,
        limit: usize,
    ) -> Result<Vec<LearningEvent>, ExperimentError> {
        let rows = sqlx::query(
            "SELECT event_id, model, at, kind, reason, detail FROM learning_events WHERE model = $1 ORDER BY at DESC, event_id DESC LIMIT $2",
        )
        .bind(model)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let mut events = rows
            .iter()
            .map(|row| {
                Ok(LearningEvent {
                    event_id: self.col(row, "event_id")?,
                    model: self.col(row, "model")?,
                    at: self.col(row, "at")?,
                    kind: self.col(row, "kind")?,
                    reason: self.col(row, "reason")?,
                    detail: self.json_col(row, "detail")?,
                })
            })
            .collect::<Result<Vec<_>, ExperimentError>>()?;
        events.reverse();
        Ok(events)
    }

    /// Takes (or renews) the lock on `model`'s loop for `holder` until `now + ttl`; `false`
    /// when another holder has it and it has not expired.
    pub async fn lock_learning(
        &self,
        model: &str,
        holder: &str,
        now: f64,
        ttl: f64,
    ) -> Result<bool, ExperimentError> {
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        sqlx::query(
            "DELETE FROM learning_locks WHERE model = $1 AND (expires_at < $2 OR holder = $3)",
        )
        .bind(model)
        .bind(now)
        .bind(holder)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        let taken = sqlx::query(
            "INSERT INTO learning_locks (model, holder, expires_at) VALUES ($1, $2, $3) ON CONFLICT (model) DO NOTHING",
        )
        .bind(model)
        .bind(holder)
        .bind(now + ttl)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?
        .rows_affected();
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(taken > 0)
    }

    /// Gives the lock back (when `holder` has it).
    pub async fn unlock_learning(&self, model: &str, holder: &str) -> Result<(), ExperimentError> {
        sqlx::query("DELETE FROM learning_locks WHERE model = $1 AND holder = $2")
            .bind(model)
            .bind(holder)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Outcomes of `model`'s predictions recorded after `after` (and at or before `until`),
    /// oldest first.
    pub async fn outcomes(
        &self,
        model: &str,
        after: f64,
        until: f64,
        limit: usize,
    ) -> Result<Vec<Outcome>, ExperimentError> {
        let rows = sqlx::query(
            "SELECT p.prediction_id, p.model_id, p.inputs, p.outputs, f.score, f.detail, f.updated_at FROM feedback f JOIN predictions p ON p.prediction_id = f.prediction_id WHERE p.model = $1 AND f.updated_at > $2 AND f.updated_at <= $3 ORDER BY f.updated_at, p.prediction_id LIMIT $4",
        )
        .bind(model)
        .bind(after)
        .bind(until)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|row| {
                Ok(Outcome {
                    prediction_id: self.col(row, "prediction_id")?,
                    model_id: self.col(row, "model_id")?,
                    inputs: self.json_col(row, "inputs")?,
                    outputs: self.json_col(row, "outputs")?,
                    score: self.col(row, "score")?,
                    detail: self.json_col(row, "detail")?,
                    updated_at: self.col(row, "updated_at")?,
                })
            })
            .collect()
    }

    /// The newest `limit` predictions of `model`, newest first.
    pub async fn recent_predictions(
        &self,
        model: &str,
        limit: usize,
    ) -> Result<Vec<Served>, ExperimentError> {
        let rows = sqlx::query(
            "SELECT model_id, inputs, outputs FROM predictions WHERE model = $1 ORDER BY created_at DESC LIMIT $2",
        )
        .bind(model)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|row| {
                Ok(Served {
                    model_id: self.col(row, "model_id")?,
                    inputs: self.json_col(row, "inputs")?,
                    outputs: self.json_col(row, "outputs")?,
                })
            })
            .collect()
    }

    /// How many predictions of `model` are logged.
    pub async fn count_predictions(&self, model: &str) -> Result<u64, ExperimentError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM predictions WHERE model = $1")
            .bind(model)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(u64_of(self.col(&row, "n")?))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Two servers race for a model's loop: exactly one holds it at a time; the other takes it
    /// over once the holder stops renewing.
    #[tokio::test]
    async fn one_server_at_a_time_runs_a_models_loop() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("db.sqlite").display());
        let a = ExperimentStore::open(&url).await.unwrap();
        let b = ExperimentStore::open(&url).await.unwrap();
        for round in 0..20 {
            let model = format!("m{round}");
            let (x, y) = tokio::join!(
                a.lock_learning(&model, "a", 100.0, 30.0),
                b.lock_learning(&model, "b", 100.0, 30.0)
            );
            assert!(x.unwrap() ^ y.unwrap(), "round {round}: exactly one wins");
        }
        assert!(a.lock_learning("t", "a", 100.0, 30.0).await.unwrap());
        assert!(!b.lock_learning("t", "b", 110.0, 30.0).await.unwrap());
        assert!(
            a.lock_learning("t", "a", 120.0, 30.0).await.unwrap(),
            "the holder renews"
        );
        assert!(!b.lock_learning("t", "b", 140.0, 30.0).await.unwrap());
        assert!(
            b.lock_learning("t", "b", 151.0, 30.0).await.unwrap(),
            "expired: taken over"
        );
        assert!(!a.lock_learning("t", "a", 152.0, 30.0).await.unwrap());
        b.unlock_learning("t", "b").await.unwrap();
        assert!(a.lock_learning("t", "a", 153.0, 30.0).await.unwrap());
    }

    #[tokio::test]
    async fn settings_state_and_decisions_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("db.sqlite").display());
        let store = ExperimentStore::open(&url).await.unwrap();
        let config = serde_json::json!({"window": 50});
        let initial = serde_json::json!({"phase": "watching"});
        store
            .set_learning("t", &config, true, &initial, 1.0)
            .await
            .unwrap();
        store
            .save_learning_state("t", &serde_json::json!({"phase": "guarding"}), 2.0)
            .await
            .unwrap();
        // New settings keep the state.
        store
            .set_learning("t", &serde_json::json!({"window": 9}), true, &initial, 3.0)
            .await
            .unwrap();
        let row = store.learning("t").await.unwrap().unwrap();
        assert_eq!(row.config["window"], 9);
        assert_eq!(row.state["phase"], "guarding");
        assert!(store.enable_learning("t", false, 4.0).await.unwrap());
        assert!(!store.learning("t").await.unwrap().unwrap().enabled);
        assert!(!store.enable_learning("nope", true, 4.0).await.unwrap());
        for (i, kind) in ["drift", "trigger", "deployed"].iter().enumerate() {
            store
                .record_learning_event(&LearningEvent {
                    event_id: format!("lev-{i}"),
                    model: "t".into(),
                    at: 10.0 + i as f64,
                    kind: kind.to_string(),
                    reason: "because".into(),
                    detail: Value::Null,
                })
                .await
                .unwrap();
        }
        let events = store.learning_events("t", 2).await.unwrap();
        let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["trigger", "deployed"],
            "the newest two, oldest first"
        );
    }
}
