//! MIPROv2: instruction proposals grounded in the data and the program, candidate demo sets,
//! and a Bayesian (TPE) search over their combinations.

mod config;
pub mod tpe;

pub use config::{
    trials_for, AutoMode, MiproConfig, MiproPlan, AUTO_MINIBATCH_THRESHOLD, CONFIG_KEYS,
    PROPOSER_DEMOS_IN_CONTEXT, VALID_KEYS,
};
