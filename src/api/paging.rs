//! Opaque `continue` tokens: the list's resourceVersion and the key to resume after.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use super::status::ApiError;

/// A decoded continue token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContinueToken {
    /// Marker so foreign tokens are rejected.
    pub v: String,
    /// resourceVersion of the list the first page came from.
    pub rv: String,
    /// Namespace of the last item returned.
    pub ns: String,
    /// Name of the last item returned.
    pub name: String,
}

const TOKEN_VERSION: &str = "kubedojo/v1";

impl ContinueToken {
    /// A token that resumes after `(ns, name)` in the list at `rv`.
    pub fn new(rv: &str, ns: &str, name: &str) -> Self {
        ContinueToken {
            v: TOKEN_VERSION.into(),
            rv: rv.into(),
            ns: ns.into(),
            name: name.into(),
        }
    }

    /// The opaque string form.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).expect("token serialises"))
    }

    /// Decodes a token; malformed input is a 400 BadRequest.
    pub fn decode(s: &str) -> Result<Self, ApiError> {
        let invalid = |why: &str| {
            ApiError::bad_request(format!(
                "invalid continue token: continue key is not valid: {why}"
            ))
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .map_err(|_| invalid("not base64"))?;
        let token: ContinueToken =
            serde_json::from_slice(&bytes).map_err(|_| invalid("not a token of this server"))?;
        if token.v != TOKEN_VERSION {
            return Err(invalid("unknown token version"));
        }
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let t = ContinueToken::new("7", "default", "x");
        assert_eq!(ContinueToken::decode(&t.encode()).unwrap(), t);
    }

    #[test]
    fn garbage_is_400() {
        for s in ["!!!", "e30", "bm9wZQ"] {
            let e = ContinueToken::decode(s).unwrap_err();
            assert_eq!(e.code, 400, "{s}");
            assert!(e.message.starts_with("invalid continue token"));
        }
    }
}
