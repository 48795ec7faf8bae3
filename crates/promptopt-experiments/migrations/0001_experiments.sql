-- Experiments, the predictions served (in or out of an experiment), their outcomes, and the
-- running sums each variant's statistics are read from. Plain SQL that SQLite and PostgreSQL
-- both run; times are seconds since the Unix epoch.
CREATE TABLE IF NOT EXISTS experiments (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    model TEXT NOT NULL,
    state TEXT NOT NULL,
    record TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS experiments_model_state ON experiments (model, state);
CREATE TABLE IF NOT EXISTS predictions (
    prediction_id TEXT PRIMARY KEY,
    model_id TEXT NOT NULL,
    experiment_id TEXT,
    variant TEXT,
    unit_id TEXT,
    inputs TEXT NOT NULL,
    outputs TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS predictions_experiment ON predictions (experiment_id);
CREATE TABLE IF NOT EXISTS exposures (
    experiment_id TEXT NOT NULL,
    unit_key TEXT NOT NULL,
    variant TEXT NOT NULL,
    PRIMARY KEY (experiment_id, unit_key)
);
CREATE TABLE IF NOT EXISTS feedback (
    prediction_id TEXT PRIMARY KEY,
    score DOUBLE PRECISION NOT NULL,
    detail TEXT NOT NULL,
    received BIGINT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS variant_stats (
    experiment_id TEXT NOT NULL,
    variant TEXT NOT NULL,
    units BIGINT NOT NULL,
    outcomes BIGINT NOT NULL,
    score_sum DOUBLE PRECISION NOT NULL,
    score_sq_sum DOUBLE PRECISION NOT NULL,
    binary_outcomes BIGINT NOT NULL,
    PRIMARY KEY (experiment_id, variant)
)
