//! Modules: the structure of a program, written in Rust.
//!
//! A [`Module`] names its predictors and their signatures ([`Module::predictors`]) and says how
//! they are chained ([`Module::forward`]); what the predictors say (instructions, demos,
//! strategy, model) lives in a [`ProgramState`], which optimizers produce.

use async_trait::async_trait;

use crate::program::RunContext;
use crate::{CoreError, Example, Prediction, PredictorState, ProgramState, Signature};

/// A program's structure: named predictors and how their outputs feed each other.
///
/// ```
/// use async_trait::async_trait;
/// use promptopt_core::{CoreError, Example, Field, Module, Prediction, RunContext, Signature};
///
/// /// Summarise, then classify the summary.
/// struct SummarizeThenClassify;
///
/// #[async_trait]
/// impl Module for SummarizeThenClassify {
///     fn predictors(&self) -> Vec<(String, Signature)> {
///         vec![
///             ("summarize".into(), Signature::new(vec![Field::text("text")], vec![Field::text("summary")])),
///             ("classify".into(), Signature::new(vec![Field::text("summary")], vec![Field::text("label")])),
///         ]
///     }
///
///     async fn forward(&self, ctx: &RunContext<'_>, inputs: &Example) -> Result<Prediction, CoreError> {
///         let summary = ctx.predict("summarize", inputs).await?;
///         let label = ctx.predict("classify", &summary).await?;
///         Ok(Prediction { outputs: label })
///     }
/// }
/// ```
#[async_trait]
pub trait Module: Send + Sync {
    /// The predictors, by name, with their signatures (the default instructions of a fresh
    /// state come from these).
    fn predictors(&self) -> Vec<(String, Signature)>;

    /// Runs the program on one example: calls [`RunContext::predict`] for each stage.
    async fn forward(
        &self,
        ctx: &RunContext<'_>,
        inputs: &Example,
    ) -> Result<Prediction, CoreError>;
}

/// The program a request file describes: one predictor.
#[derive(Debug, Clone, PartialEq)]
pub struct SinglePredictor {
    /// The predictor's name (`predict` by convention).
    pub name: String,
    /// Its signature.
    pub signature: Signature,
}

impl SinglePredictor {
    /// The conventional name of the single predictor.
    pub const NAME: &'static str = "predict";

    /// A single predictor named `predict`.
    pub fn new(signature: Signature) -> Self {
        Self {
            name: Self::NAME.to_string(),
            signature,
        }
    }
}

#[async_trait]
impl Module for SinglePredictor {
    fn predictors(&self) -> Vec<(String, Signature)> {
        vec![(self.name.clone(), self.signature.clone())]
    }

    async fn forward(
        &self,
        ctx: &RunContext<'_>,
        inputs: &Example,
    ) -> Result<Prediction, CoreError> {
        let outputs = ctx.predict(&self.name, inputs).await?;
        Ok(Prediction { outputs })
    }
}

/// A fresh state for a module: each predictor with its signature's instructions, no demos,
/// `Predict`, the run's default model.
pub fn initial_state(module: &dyn Module) -> ProgramState {
    let mut state = ProgramState::default();
    for (name, signature) in module.predictors() {
        state
            .predictors
            .insert(name, PredictorState::new(signature.instructions));
    }
    state
}
