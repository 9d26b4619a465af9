//! Client JWTs: HS256 with a shared secret, or RS256/ES256 with a public
//! key. A token must carry `sub` (the session's identity) and `exp`; a
//! configured claim may set the class.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use crate::http::config::AuthConfig;

/// Why a token was refused (answered 401, the detail in the body).
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// Past its `exp`.
    #[error("the token has expired")]
    Expired,
    /// Not signed by the configured key, or with another algorithm.
    #[error("the token's signature does not verify")]
    BadSignature,
    /// Not a JWT, or without the claims Vigil needs.
    #[error("the token is malformed: {0}")]
    Malformed(String),
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedClaims {
    /// `sub`: the session's identity.
    pub subject: String,
    /// The class claim's value, when configured and present.
    pub class: Option<String>,
    /// `exp`.
    pub expires_at: SystemTime,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(flatten)]
    other: HashMap<String, Value>,
}

/// Verifies client tokens with the configured key.
#[derive(Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
    class_claim: Option<String>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// The verifier `[auth]` asks for; `None` without a JWT key.
    pub fn from_config(config: &AuthConfig) -> anyhow::Result<Option<Self>> {
        let (key, algorithm) = match (&config.jwt_secret, &config.jwt_public_key) {
            (Some(secret), _) => (
                DecodingKey::from_secret(secret.as_bytes()),
                Algorithm::HS256,
            ),
            (None, Some(path)) => {
                let pem = std::fs::read(path).with_context(|| {
                    format!("cannot read [auth] jwt_public_key {}", path.display())
                })?;
                match DecodingKey::from_rsa_pem(&pem) {
                    Ok(key) => (key, Algorithm::RS256),
                    Err(_) => (
                        DecodingKey::from_ec_pem(&pem).with_context(|| {
                            format!(
                                "[auth] jwt_public_key {} is neither an RSA nor an EC public key in PEM",
                                path.display()
                            )
                        })?,
                        Algorithm::ES256,
                    ),
                }
            }
            (None, None) => return Ok(None),
        };
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["sub", "exp"]);
        validation.leeway = config.leeway_secs;
        if let Some(issuer) = &config.jwt_issuer {
            validation.set_issuer(&[issuer]);
        }
        match &config.jwt_audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        Ok(Some(JwtVerifier {
            key,
            validation,
            class_claim: config.class_claim.clone(),
        }))
    }

    /// Verifies `token`: signature, algorithm, `exp` (and `iss`/`aud` when
    /// configured).
    pub fn verify(&self, token: &str) -> Result<VerifiedClaims, JwtError> {
        use jsonwebtoken::errors::ErrorKind;
        let data =
            decode::<Claims>(token, &self.key, &self.validation).map_err(|error| {
                match error.kind() {
                    ErrorKind::ExpiredSignature => JwtError::Expired,
                    ErrorKind::InvalidSignature
                    | ErrorKind::InvalidAlgorithm
                    | ErrorKind::InvalidKeyFormat => JwtError::BadSignature,
                    _ => JwtError::Malformed(error.to_string()),
                }
            })?;
        let claims = data.claims;
        if claims.sub.is_empty() {
            return Err(JwtError::Malformed("`sub` is empty".to_owned()));
        }
        let class = self
            .class_claim
            .as_ref()
            .and_then(|name| claims.other.get(name))
            .and_then(Value::as_str)
            .filter(|class| !class.is_empty())
            .map(str::to_owned);
        Ok(VerifiedClaims {
            subject: claims.sub,
            class,
            expires_at: SystemTime::UNIX_EPOCH + Duration::from_secs(claims.exp),
        })
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)] // a failed expectation is the test failing
mod tests {
    use jsonwebtoken::{encode, EncodingKey, Header};
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!";

    fn verifier() -> JwtVerifier {
        let config = AuthConfig {
            jwt_secret: Some(SECRET.to_owned()),
            class_claim: Some("class".to_owned()),
            ..AuthConfig::default()
        };
        JwtVerifier::from_config(&config)
            .expect("valid")
            .expect("configured")
    }

    fn token(claims: Value, secret: &str) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("encodes")
    }

    fn in_an_hour() -> u64 {
        vigil_policy_runtime::clock::unix_ms_now() / 1_000 + 3_600
    }

    #[test]
    fn a_valid_token_gives_its_subject_and_class() {
        let claims = verifier()
            .verify(&token(
                json!({"sub": "bot-1", "exp": in_an_hour(), "class": "bots"}),
                SECRET,
            ))
            .expect("verifies");
        assert_eq!(claims.subject, "bot-1");
        assert_eq!(claims.class.as_deref(), Some("bots"));
    }

    #[test]
    fn expired_forged_and_incomplete_tokens_are_refused() {
        let verifier = verifier();
        let expired = token(json!({"sub": "a", "exp": 1_000}), SECRET);
        assert!(matches!(verifier.verify(&expired), Err(JwtError::Expired)));
        let forged = token(
            json!({"sub": "a", "exp": in_an_hour()}),
            "another-secret-of-at-least-32-bytes!!",
        );
        assert!(matches!(
            verifier.verify(&forged),
            Err(JwtError::BadSignature)
        ));
        let no_exp = token(json!({"sub": "a"}), SECRET);
        assert!(matches!(
            verifier.verify(&no_exp),
            Err(JwtError::Malformed(_))
        ));
        let no_sub = token(json!({"exp": in_an_hour()}), SECRET);
        assert!(verifier.verify(&no_sub).is_err());
        assert!(verifier.verify("not.a.jwt").is_err());
    }

    /// Test-only key pairs (`host/tests/fixtures`, made with openssl).
    fn fixture(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    #[test]
    fn rs256_and_es256_tokens_verify_with_the_public_key_file_alone() {
        for (private, public, algorithm) in [
            (
                "jwt-rsa.key.pem",
                "jwt-rsa.pub.pem",
                jsonwebtoken::Algorithm::RS256,
            ),
            (
                "jwt-ec.key.pem",
                "jwt-ec.pub.pem",
                jsonwebtoken::Algorithm::ES256,
            ),
        ] {
            let pem = std::fs::read(fixture(private)).expect("fixture");
            let key = match algorithm {
                jsonwebtoken::Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
                _ => EncodingKey::from_ec_pem(&pem),
            }
            .expect("a private key");
            let claims = json!({"sub": "signed", "exp": in_an_hour()});
            let token = encode(&Header::new(algorithm), &claims, &key).expect("encodes");
            let config = AuthConfig {
                jwt_public_key: Some(fixture(public)),
                ..AuthConfig::default()
            };
            let verifier = JwtVerifier::from_config(&config)
                .expect("loads")
                .expect("configured");
            assert_eq!(verifier.verify(&token).expect("verifies").subject, "signed");
            // An HS256 token made with the public key as its secret (the
            // classic algorithm confusion) does not verify.
            let public_pem = std::fs::read(fixture(public)).expect("fixture");
            let confused = encode(
                &Header::default(),
                &claims,
                &EncodingKey::from_secret(&public_pem),
            )
            .expect("encodes");
            assert!(verifier.verify(&confused).is_err(), "{algorithm:?}");
        }
    }

    proptest! {
        #[test]
        fn no_random_string_verifies_and_none_panics(text in ".{0,400}") {
            prop_assert!(verifier().verify(&text).is_err());
        }

        #[test]
        fn no_tampered_token_verifies(flip in 0usize..200, byte in any::<u8>()) {
            let mut bytes = token(json!({"sub": "bot", "exp": in_an_hour()}), SECRET).into_bytes();
            let at = flip % bytes.len();
            prop_assume!(bytes[at] != byte);
            bytes[at] = byte;
            let tampered = String::from_utf8_lossy(&bytes).into_owned();
            let verified = verifier().verify(&tampered);
            // Base64url decoding may ignore the last bits of a segment; a
            // change the signature does not cover cannot change the claims.
            if let Ok(claims) = verified {
                prop_assert_eq!(claims.subject, "bot");
            }
        }
    }
}
