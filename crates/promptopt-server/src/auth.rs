//! Bearer tokens and their scopes.
//!
//! Tokens come from `PROMPTOPT_API_TOKENS` (comma-separated `TOKEN:SCOPE` pairs; a bare `TOKEN`
//! has every scope; a token listed twice has both scopes) and from the configuration's `tokens`,
//! where a token may be stored as its SHA-256 (`sha256: <hex>`) instead of in clear. Only the
//! SHA-256 of each token is kept in memory. `admin` includes the other scopes.

use std::collections::{BTreeSet, HashMap};

use axum::http::{header, HeaderMap, StatusCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ServerError};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Call saved models (`POST /v1/models/{name}/predict`) and read models.
    Predict,
    /// Submit, follow and cancel optimizations; read models.
    Optimize,
    /// Everything, including promoting and deleting versions and `/metrics`.
    Admin,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 3] = [Scope::Predict, Scope::Optimize, Scope::Admin];

    /// The scope's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Predict => "predict",
            Scope::Optimize => "optimize",
            Scope::Admin => "admin",
        }
    }

    fn parse(text: &str) -> Option<Scope> {
        match text.trim() {
            "predict" => Some(Scope::Predict),
            "optimize" => Some(Scope::Optimize),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

/// One token in the configuration file: the token itself or its SHA-256, and its scopes (all of
/// them when none are listed).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// The token in clear.
    #[serde(default)]
    pub token: Option<String>,
    /// The token's SHA-256 in hex (`printf %s TOKEN | sha256sum`).
    #[serde(default)]
    pub sha256: Option<String>,
    /// Its scopes.
    #[serde(default)]
    pub scopes: Vec<Scope>,
}

/// The tokens the server accepts.
#[derive(Clone, Default)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], BTreeSet<Scope>>,
    disabled: bool,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("count", &self.by_hash.len())
            .field("disabled", &self.disabled)
            .finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    /// Accepts every request (`--no-auth`).
    pub fn disabled() -> Self {
        Self {
            by_hash: HashMap::new(),
            disabled: true,
        }
    }

    /// Whether every request is accepted.
    pub fn is_disabled(&self) -> bool {
        self.disabled
    }

    /// How many distinct tokens are accepted.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether no token is accepted.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    fn add(&mut self, hash: [u8; 32], scopes: &[Scope]) {
        let entry = self.by_hash.entry(hash).or_default();
        if scopes.is_empty() {
            entry.extend(Scope::ALL);
        } else {
            entry.extend(scopes.iter().copied());
        }
    }

    /// Adds the pairs of a `PROMPTOPT_API_TOKENS`-style list: `TOKEN:SCOPE,TOKEN2,...`.
    pub fn add_list(&mut self, list: &str, source_name: &str) -> Result<(), ServerError> {
        for (i, item) in list.split(',').enumerate() {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let (token, scope) = match item.rsplit_once(':') {
                Some((token, scope)) => {
                    let parsed = Scope::parse(scope).ok_or_else(|| ServerError::Tokens {
                        source_name: source_name.to_string(),
                        message: format!(
                            "entry {} has the unknown scope `{}` (use `predict`, `optimize` or `admin`)",
                            i + 1,
                            scope.trim()
                        ),
                    })?;
                    (token, vec![parsed])
                }
                None => (item, Vec::new()),
            };
            if token.is_empty() {
                return Err(ServerError::Tokens {
                    source_name: source_name.to_string(),
                    message: format!("entry {} has an empty token", i + 1),
                });
            }
            self.add(digest(token), &scope);
        }
        Ok(())
    }

    /// Adds the tokens of the configuration file.
    pub fn add_specs(&mut self, specs: &[TokenSpec], source_name: &str) -> Result<(), ServerError> {
        for (i, spec) in specs.iter().enumerate() {
            let error = |message: &str| ServerError::Tokens {
                source_name: source_name.to_string(),
                message: format!("token {}: {message}", i + 1),
            };
            let hash = match (&spec.token, &spec.sha256) {
                (Some(token), None) if !token.is_empty() => digest(token),
                (None, Some(hex_digest)) => {
                    let bytes = hex::decode(hex_digest.trim())
                        .map_err(|_| error("`sha256` is not hexadecimal"))?;
                    <[u8; 32]>::try_from(bytes.as_slice())
                        .map_err(|_| error("`sha256` must have 64 hex digits"))?
                }
                _ => return Err(error("give exactly one of `token` and `sha256`")),
            };
            self.add(hash, &spec.scopes);
        }
        Ok(())
    }

    /// The scopes of `token` (every scope when authentication is off), `None` for an unknown
    /// token. `admin` is expanded to every scope.
    pub(crate) fn scopes_of(&self, token: &str) -> Option<BTreeSet<Scope>> {
        if self.disabled {
            return Some(Scope::ALL.into_iter().collect());
        }
        let scopes = self.by_hash.get(&digest(token))?;
        if scopes.contains(&Scope::Admin) {
            return Some(Scope::ALL.into_iter().collect());
        }
        Some(scopes.clone())
    }

    /// Checks the request's `Authorization: Bearer TOKEN` for `scope`: 401 without a known
    /// token, 403 when the token lacks the scope.
    pub fn authorize(&self, headers: &HeaderMap, scope: Scope) -> Result<(), ApiError> {
        if self.disabled {
            return Ok(());
        }
        let unauthorized = |message: &str| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                message.to_string(),
            )
        };
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(unauthorized(
                "This endpoint needs `Authorization: Bearer TOKEN`",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (kind, token) = v.trim().split_once(' ')?;
                kind.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthorized("The `Authorization` header must be `Bearer TOKEN`"))?;
        let Some(scopes) = self.by_hash.get(&digest(token)) else {
            return Err(unauthorized("The token is not valid"));
        };
        if scopes.contains(&scope) || scopes.contains(&Scope::Admin) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("The token lacks the `{}` scope", scope.as_str()),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        headers
    }

    #[test]
    fn scopes_are_checked_and_admin_has_them_all() {
        let mut tokens = Tokens::default();
        tokens
            .add_list("p1:predict, o1:optimize,o1:predict,root", "env")
            .unwrap();
        assert_eq!(tokens.len(), 3);
        assert!(tokens.authorize(&bearer("p1"), Scope::Predict).is_ok());
        let e = tokens
            .authorize(&bearer("p1"), Scope::Optimize)
            .unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert!(tokens.authorize(&bearer("o1"), Scope::Predict).is_ok());
        assert!(tokens.authorize(&bearer("root"), Scope::Admin).is_ok());
        let e = tokens
            .authorize(&bearer("nope"), Scope::Predict)
            .unwrap_err();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        let e = tokens
            .authorize(&HeaderMap::new(), Scope::Predict)
            .unwrap_err();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        assert!(!e.message.contains("p1"));
    }

    #[test]
    fn hashed_tokens_are_accepted_and_bad_lists_refused() {
        let mut tokens = Tokens::default();
        let spec = TokenSpec {
            sha256: Some(hex::encode(digest("s3cret"))),
            scopes: vec![Scope::Predict],
            ..TokenSpec::default()
        };
        tokens.add_specs(&[spec], "serve.yaml").unwrap();
        assert!(tokens.authorize(&bearer("s3cret"), Scope::Predict).is_ok());
        let e = tokens.add_list("abc:root", "env").unwrap_err().to_string();
        assert!(e.contains("unknown scope `root`"), "{e}");
        assert!(!e.contains("abc"), "{e}");
        let bad = TokenSpec {
            sha256: Some("zz".into()),
            ..TokenSpec::default()
        };
        assert!(tokens.add_specs(&[bad], "serve.yaml").is_err());
    }
}
