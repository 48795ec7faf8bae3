//! Remote providers, chosen by the `provider/` part of a model name.

mod anthropic;
mod gemini;
mod openai;

use std::sync::Arc;

pub use anthropic::AnthropicLm;
pub use gemini::GeminiLm;
pub use openai::OpenAiLm;

use crate::config::{ApiKey, LmConfig, ProviderConfig};
use crate::{LmError, SharedLm};

/// The remote providers [`open_provider`] knows.
pub const KNOWN_PROVIDERS: &[&str] = &["openai", "anthropic", "gemini"];

/// Opens the remote provider that serves `model` (`provider/model`).
///
/// Keys and base URLs come from `config`, else from the provider's environment variables
/// (`OPENAI_API_KEY`/`OPENAI_BASE_URL`, `ANTHROPIC_API_KEY`/`ANTHROPIC_BASE_URL`,
/// `GOOGLE_API_KEY` or `GEMINI_API_KEY`/`GEMINI_BASE_URL`). `local/…` models are served by the
/// embedded engine, which the caller plugs into [`crate::LmStack`] itself.
///
/// ```
/// use promptopt_lm::{open_provider, LmConfig, LmError};
///
/// let config = LmConfig::default().with_base_url("openai", "http://127.0.0.1:8080/v1");
/// assert!(open_provider("openai/any-model", &config).is_ok());
/// assert!(matches!(
///     open_provider("acme/model", &config),
///     Err(LmError::UnknownProvider { .. })
/// ));
/// ```
pub fn open_provider(model: &str, config: &LmConfig) -> Result<SharedLm, LmError> {
    open_provider_with_env(model, config, &|name| std::env::var(name).ok())
}

/// Like [`open_provider`], with environment variables read through `env`.
pub fn open_provider_with_env(
    model: &str,
    config: &LmConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SharedLm, LmError> {
    let Some((provider, _)) = model.split_once('/') else {
        return Err(unknown(model, ""));
    };
    let settings = Settings::resolve(provider, &config.provider(provider), env);
    match provider {
        "openai" => Ok(Arc::new(OpenAiLm::new(settings)?)),
        "anthropic" => Ok(Arc::new(AnthropicLm::new(settings)?)),
        "gemini" => Ok(Arc::new(GeminiLm::new(settings)?)),
        other => Err(unknown(model, other)),
    }
}

fn unknown(model: &str, provider: &str) -> LmError {
    LmError::UnknownProvider {
        provider: provider.to_owned(),
        model: model.to_owned(),
        known: KNOWN_PROVIDERS.join(", "),
    }
}

/// A provider's base URL and key after configuration and environment were consulted.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The base URL given by configuration or environment, if any.
    pub custom_base_url: Option<String>,
    /// The key, if any.
    pub key: Option<ApiKey>,
    /// The variables that may hold the key, for the error message.
    pub key_variables: &'static [&'static str],
}

impl Settings {
    fn resolve(
        provider: &str,
        config: &ProviderConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Self {
        let (key_variables, url_variable): (&'static [&'static str], &str) = match provider {
            "openai" => (&["OPENAI_API_KEY"], "OPENAI_BASE_URL"),
            "anthropic" => (&["ANTHROPIC_API_KEY"], "ANTHROPIC_BASE_URL"),
            "gemini" => (&["GOOGLE_API_KEY", "GEMINI_API_KEY"], "GEMINI_BASE_URL"),
            _ => (&[], ""),
        };
        let non_empty = |s: String| (!s.trim().is_empty()).then_some(s);
        let custom_base_url = config
            .base_url
            .clone()
            .and_then(non_empty)
            .or_else(|| env(url_variable).and_then(non_empty));
        let key = config
            .api_key
            .clone()
            .filter(|k| !k.expose().trim().is_empty())
            .or_else(|| {
                key_variables
                    .iter()
                    .find_map(|name| env(name).and_then(non_empty))
                    .map(ApiKey::new)
            });
        Self {
            custom_base_url,
            key,
            key_variables,
        }
    }

    /// The key, or the error that names the variable to set.
    pub fn require_key(&self, provider: &str) -> Result<ApiKey, LmError> {
        self.key.clone().ok_or_else(|| LmError::MissingApiKey {
            provider: provider.to_owned(),
            variable: self.key_variables.join("` or `"),
        })
    }
}

/// Splits `provider/model` and returns the model part.
pub(crate) fn model_part(model: &str) -> &str {
    crate::request::split_model(model).1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn a_missing_key_names_the_variable() {
        let config = LmConfig::default();
        for (model, variable) in [
            ("openai/gpt-4o", "`OPENAI_API_KEY`"),
            ("anthropic/claude-3-5-haiku-latest", "`ANTHROPIC_API_KEY`"),
            (
                "gemini/gemini-2.0-flash",
                "`GOOGLE_API_KEY` or `GEMINI_API_KEY`",
            ),
        ] {
            let error = open_provider_with_env(model, &config, &no_env)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(error.contains(variable), "{error}");
        }
    }

    #[test]
    fn a_custom_openai_base_url_needs_no_key() {
        let config = LmConfig::default();
        let env = |name: &str| (name == "OPENAI_BASE_URL").then(|| "http://127.0.0.1:1/v1".into());
        assert!(open_provider_with_env("openai/x", &config, &env).is_ok());
    }

    #[test]
    fn provider_debug_output_hides_the_key() {
        let config = LmConfig::default()
            .with_api_key("openai", "sk-HIDDEN-1")
            .with_api_key("anthropic", "sk-HIDDEN-2")
            .with_api_key("gemini", "sk-HIDDEN-3");
        let settings = |p: &str| Settings::resolve(p, &config.provider(p), &no_env);
        let debug = format!(
            "{:?} {:?} {:?}",
            OpenAiLm::new(settings("openai")).ok(),
            AnthropicLm::new(settings("anthropic")).ok(),
            GeminiLm::new(settings("gemini")).ok()
        );
        assert!(
            debug.contains("OpenAiLm") && debug.contains("GeminiLm"),
            "{debug}"
        );
        assert!(!debug.contains("HIDDEN"), "{debug}");
    }

    #[test]
    fn unknown_providers_list_the_known_ones() {
        let error = open_provider_with_env("acme/x", &LmConfig::default(), &no_env)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("openai, anthropic, gemini"), "{error}");
    }
}
