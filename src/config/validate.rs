//! Validation of a whole config tree: the JSON Schema in `schema/` first, then the rules
//! it cannot state (`constraints`), then the cross-references (`references`), then the
//! members Wharf does not implement (`unsupported`), then what only compiling can tell
//! (regular expressions, address ranges, variables), which yields the typed `Plan`.
//!
//! Errors become one plain sentence prefixed with the JSON path of the offending value.
//! The schema carries its own wording: a node may hold an `errorMessage` annotation, a
//! string or an object keyed by keyword, which replaces the generic sentence for errors
//! raised by that node's keywords.

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{ValidationError, Validator};
use serde_json::Value;
use thiserror::Error;

use super::model::Plan;
use super::{constraints, references, unsupported};
use crate::tls::{LiveCertificates, Sessions};

/// The schema of the whole config, the single source of truth for its shape.
pub const SCHEMA: &str = include_str!("../../schema/config.schema.json");

/// A config that fails validation; the detail names the path and says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{detail}")]
pub struct InvalidConfig {
    pub detail: String,
}

/// A compiled schema, built once at startup.
pub struct ConfigValidator {
    schema: Value,
    validator: Validator,
}

impl ConfigValidator {
    pub fn new() -> anyhow::Result<Self> {
        let schema: Value = serde_json::from_str(SCHEMA)
            .map_err(|e| anyhow::anyhow!("the built-in config schema is not JSON: {e}"))?;
        let validator = jsonschema::draft202012::new(&schema)
            .map_err(|e| anyhow::anyhow!("the built-in config schema is invalid: {e}"))?;
        Ok(Self { schema, validator })
    }

    /// Validates a whole tree (shape, constraints, references, support) and compiles it,
    /// TLS listeners against the uploaded `certificates`.
    pub fn validate(
        &self,
        tree: &Value,
        certificates: &LiveCertificates,
        sessions: &Sessions,
    ) -> Result<Plan, InvalidConfig> {
        if let Some(error) = self.validator.iter_errors(tree).next() {
            return Err(InvalidConfig {
                detail: self.describe(&error),
            });
        }
        constraints::check(tree)
            .and_then(|()| references::check(tree))
            .and_then(|()| unsupported::check(tree))
            .and_then(|()| Plan::compile(tree, certificates, sessions).map_err(|e| e.to_string()))
            .map_err(|detail| InvalidConfig { detail })
    }

    fn describe(&self, error: &ValidationError<'_>) -> String {
        let mut path: Vec<String> = error
            .instance_path()
            .segments()
            .map(|s| s.to_string())
            .collect();
        let keyword_location = error.schema_path().as_str();
        let custom = |location: &str, keyword: &str| self.custom_message(location, keyword);
        let message = match error.kind() {
            ValidationErrorKind::Required { property } => {
                path.push(
                    property
                        .as_str()
                        .map_or_else(|| property.to_string(), str::to_owned),
                );
                "required parameter is missing".to_owned()
            }
            ValidationErrorKind::AdditionalProperties { unexpected }
            | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
                if let Some(name) = unexpected.first() {
                    path.push(name.clone());
                }
                "unknown parameter".to_owned()
            }
            ValidationErrorKind::PropertyNames { error: inner } => {
                if let Some(name) = inner.instance().as_str() {
                    path.push(name.to_owned());
                }
                custom(inner.schema_path().as_str(), inner.kind().keyword())
                    .or_else(|| custom(keyword_location, "propertyNames"))
                    .unwrap_or_else(|| "is not an allowed name here".to_owned())
            }
            kind => custom(keyword_location, kind.keyword()).unwrap_or_else(|| generic(kind)),
        };
        let path = if path.is_empty() {
            "config".to_owned()
        } else {
            path.join("/")
        };
        format!("{path}: {message}")
    }

    /// The `errorMessage` of the schema node that holds the keyword at `location`.
    fn custom_message(&self, location: &str, keyword: &str) -> Option<String> {
        let node_location = location.rsplit_once('/').map_or("", |(node, _)| node);
        let message = self.schema.pointer(node_location)?.get("errorMessage")?;
        match message {
            Value::String(text) => Some(text.clone()),
            Value::Object(by_keyword) => by_keyword.get(keyword)?.as_str().map(str::to_owned),
            _ => None,
        }
    }
}

/// The sentence for an error whose schema node says nothing of its own.
fn generic(kind: &ValidationErrorKind) -> String {
    match kind {
        ValidationErrorKind::Type { kind } => {
            let names: Vec<&str> = match kind {
                TypeKind::Single(t) => vec![type_name(t.as_str())],
                TypeKind::Multiple(set) => set.iter().map(|t| type_name(t.as_str())).collect(),
            };
            format!("must be {}", names.join(" or "))
        }
        ValidationErrorKind::Enum { options } => match options.as_array() {
            Some(options) => {
                let options: Vec<String> = options.iter().map(Value::to_string).collect();
                format!("must be one of {}", options.join(", "))
            }
            None => "is not one of the allowed values".to_owned(),
        },
        ValidationErrorKind::Constant { expected_value } => format!("must be {expected_value}"),
        ValidationErrorKind::Minimum { limit } => format!("must be at least {limit}"),
        ValidationErrorKind::Maximum { limit } => format!("must be at most {limit}"),
        ValidationErrorKind::ExclusiveMinimum { limit } => format!("must be greater than {limit}"),
        ValidationErrorKind::ExclusiveMaximum { limit } => format!("must be less than {limit}"),
        ValidationErrorKind::MinLength { limit: 1 } => "must not be empty".to_owned(),
        ValidationErrorKind::MinLength { limit } => {
            format!("must be at least {limit} characters long")
        }
        ValidationErrorKind::MaxLength { limit } => {
            format!("must be at most {limit} characters long")
        }
        ValidationErrorKind::MinItems { limit } => format!("must have at least {limit} items"),
        ValidationErrorKind::MaxItems { limit } => format!("must have at most {limit} items"),
        ValidationErrorKind::MinProperties { .. } => "must not be empty".to_owned(),
        ValidationErrorKind::MaxProperties { limit } => {
            format!("must have at most {limit} members")
        }
        ValidationErrorKind::UniqueItems => "must not contain duplicates".to_owned(),
        ValidationErrorKind::Pattern { .. } => "does not have the expected form".to_owned(),
        ValidationErrorKind::FalseSchema | ValidationErrorKind::Not { .. } => {
            "is not allowed here".to_owned()
        }
        ValidationErrorKind::AnyOf { .. } | ValidationErrorKind::OneOfNotValid { .. } => {
            "does not have any of the accepted forms".to_owned()
        }
        ValidationErrorKind::OneOfMultipleValid { .. } => {
            "matches more than one of the accepted forms".to_owned()
        }
        other => format!("is invalid ({} check failed)", other.keyword()),
    }
}

fn type_name(json_type: &str) -> &'static str {
    match json_type {
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "boolean" => "a boolean",
        "object" => "an object",
        "array" => "an array",
        "null" => "null",
        _ => "of another type",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn detail(tree: Value) -> String {
        let validator = ConfigValidator::new().expect("schema compiles");
        match validator.validate(&tree, &LiveCertificates::default(), &Sessions::default()) {
            Ok(_) => panic!("must be invalid"),
            Err(e) => e.detail,
        }
    }

    #[test]
    fn accepts_the_default_and_the_design_example() {
        let validator = ConfigValidator::new().expect("schema compiles");
        let default = json!({"listeners": {}, "routes": [], "applications": {}});
        assert!(
            validator
                .validate(&default, &LiveCertificates::default(), &Sessions::default())
                .is_ok()
        );
        let example = json!({
            "listeners": {"*:8080": {"pass": "routes"}},
            "routes": [
                {"match": {"uri": "/echo*"}, "action": {"pass": "applications/echo"}},
                {"action": {"return": 404}}
            ],
            "applications": {
                "echo": {
                    "type": "wasm",
                    "module": "/srv/echo.wasm",
                    "request_handler": "luw_request_handler",
                    "malloc_handler": "luw_malloc_handler",
                    "free_handler": "luw_free_handler",
                    "module_init_handler": "luw_module_init_handler",
                    "access": {"filesystem": ["/var/tmp"]}
                },
                "hello": {"type": "wasm-wasi-component", "component": "/srv/hello.wasm"}
            }
        });
        assert!(
            validator
                .validate(&example, &LiveCertificates::default(), &Sessions::default())
                .is_ok()
        );
    }

    #[test]
    fn names_the_missing_member() {
        let tree = json!({"applications": {"echo": {
            "type": "wasm", "module": "/m.wasm",
            "malloc_handler": "m", "free_handler": "f"
        }}});
        assert_eq!(
            detail(tree),
            "applications/echo/request_handler: required parameter is missing"
        );
    }

    #[test]
    fn names_unknown_members_and_the_root() {
        assert_eq!(detail(json!({"bogus": 1})), "bogus: unknown parameter");
        assert_eq!(detail(json!([])), "config: must be an object");
    }
}
