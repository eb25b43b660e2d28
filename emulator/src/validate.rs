//! Input validation of the AWS operations, answering the model's ValidationException.
//!
//! A body that is not a JSON object, or a member of the wrong JSON type, stops the request at once
//! with reason `CANNOT_PARSE`. Constraint violations (required members, lengths, ranges, enums,
//! patterns) are collected across the whole request and answered together with reason
//! `FIELD_VALIDATION_FAILED` and one `fieldList` entry each, as AWS front ends do. Validation runs
//! before any lookup: an invalid request never gets a ResourceNotFoundException.

use crate::errors::{AwsError, FieldError, ValidationReason};
use serde_json::{Map, Value};
use std::collections::HashMap;

/// The JSON members of a request body.
pub struct Body(Map<String, Value>);

impl Body {
    /// Parses a request body; an empty body counts as `{}`.
    pub fn parse(bytes: &[u8]) -> Result<Body, AwsError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Body(Map::new()));
        }
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => Ok(Body(map)),
            Ok(_) => Err(AwsError::validation(
                ValidationReason::CannotParse,
                "The request body must be a JSON object.",
            )),
            Err(e) => Err(AwsError::validation(
                ValidationReason::CannotParse,
                format!("Could not parse the request body as JSON: {e}"),
            )),
        }
    }

    /// A member, treating JSON `null` as absent.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }
}

fn wrong_type(name: &str, expected: &str) -> AwsError {
    AwsError::validation(
        ValidationReason::CannotParse,
        format!("Could not parse the request: member '{name}' must be {expected}."),
    )
}

/// Collects constraint violations of one request.
#[derive(Default)]
pub struct Checker {
    fields: Vec<FieldError>,
}

impl Checker {
    pub fn new() -> Checker {
        Checker::default()
    }

    pub fn fail(&mut self, name: &str, message: impl Into<String>) {
        self.fields.push(FieldError {
            name: name.to_string(),
            message: message.into(),
        });
    }

    /// `workspaceId` must match `g-[0-9a-f]{10}`.
    pub fn workspace_id(&mut self, id: &str) {
        if !is_workspace_id(id) {
            self.fail(
                "workspaceId",
                "Member must satisfy regular expression pattern: g-[0-9a-f]{10}",
            );
        }
    }

    /// Checks a string's length in characters.
    pub fn length(&mut self, name: &str, value: &str, min: usize, max: usize) {
        let len = value.chars().count();
        if len < min || len > max {
            self.fail(
                name,
                format!("Member must have length between {min} and {max}, inclusive"),
            );
        }
    }

    /// A required string member of the body, checked for length.
    pub fn required_string(
        &mut self,
        body: &Body,
        name: &str,
        min: usize,
        max: usize,
    ) -> Result<Option<String>, AwsError> {
        match body.get(name) {
            None => {
                self.fail(name, "Member must not be null");
                Ok(None)
            }
            Some(Value::String(s)) => {
                self.length(name, s, min, max);
                Ok(Some(s.clone()))
            }
            Some(_) => Err(wrong_type(name, "a string")),
        }
    }

    /// An optional string member of the body, checked for length when present.
    pub fn optional_string(
        &mut self,
        body: &Body,
        name: &str,
        min: usize,
        max: usize,
    ) -> Result<Option<String>, AwsError> {
        match body.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => {
                self.length(name, s, min, max);
                Ok(Some(s.clone()))
            }
            Some(_) => Err(wrong_type(name, "a string")),
        }
    }

    /// A required integer member of the body, checked for range.
    pub fn required_integer(
        &mut self,
        body: &Body,
        name: &str,
        min: i64,
        max: i64,
    ) -> Result<Option<i64>, AwsError> {
        match body.get(name) {
            None => {
                self.fail(name, "Member must not be null");
                Ok(None)
            }
            Some(v) => {
                let n = v.as_i64().ok_or_else(|| wrong_type(name, "an integer"))?;
                self.range(name, n, min, max);
                Ok(Some(n))
            }
        }
    }

    pub fn range(&mut self, name: &str, value: i64, min: i64, max: i64) {
        if value < min {
            self.fail(
                name,
                format!("Member must have value greater than or equal to {min}"),
            );
        } else if value > max {
            self.fail(
                name,
                format!("Member must have value less than or equal to {max}"),
            );
        }
    }

    /// Checks an enum value, returning it parsed when valid.
    pub fn enum_value<T>(
        &mut self,
        name: &str,
        value: &str,
        allowed: &[&str],
        parse: impl Fn(&str) -> Option<T>,
    ) -> Option<T> {
        let parsed = parse(value);
        if parsed.is_none() {
            self.fail(
                name,
                format!(
                    "Member must satisfy enum value set: [{}]",
                    allowed.join(", ")
                ),
            );
        }
        parsed
    }

    /// An optional integer query parameter within a range.
    pub fn query_integer(
        &mut self,
        query: &HashMap<String, String>,
        name: &str,
        min: i64,
        max: i64,
    ) -> Option<i64> {
        let raw = query.get(name)?;
        match raw.parse::<i64>() {
            Ok(n) => {
                self.range(name, n, min, max);
                Some(n)
            }
            Err(_) => {
                self.fail(name, "Member must be an integer");
                None
            }
        }
    }

    /// Ends validation: all collected violations become one ValidationException.
    pub fn finish(self) -> Result<(), AwsError> {
        if self.fields.is_empty() {
            return Ok(());
        }
        let count = self.fields.len();
        let details: Vec<String> = self
            .fields
            .iter()
            .map(|f| {
                format!(
                    "Value at '{}' failed to satisfy constraint: {}",
                    f.name, f.message
                )
            })
            .collect();
        Err(AwsError::Validation {
            message: format!(
                "{count} validation error{} detected: {}",
                if count == 1 { "" } else { "s" },
                details.join("; ")
            ),
            reason: ValidationReason::FieldValidationFailed,
            fields: self.fields,
        })
    }
}

/// Whether `id` matches the model's `WorkspaceId` pattern `g-[0-9a-f]{10}`.
pub fn is_workspace_id(id: &str) -> bool {
    id.len() == 12
        && id.starts_with("g-")
        && id[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_id_pattern() {
        assert!(is_workspace_id("g-0123456789"));
        assert!(is_workspace_id("g-abcdef0123"));
        assert!(!is_workspace_id("g-ABCDEF0123"));
        assert!(!is_workspace_id("g-012345678"));
        assert!(!is_workspace_id("x-0123456789"));
        assert!(!is_workspace_id("g-012345678g"));
    }

    #[test]
    fn collects_every_violation() {
        let body = Body::parse(br#"{"name": "", "secondsToLive": 0}"#).unwrap();
        let mut check = Checker::new();
        check.required_string(&body, "name", 1, 128).unwrap();
        check
            .required_integer(&body, "secondsToLive", 1, 2_592_000)
            .unwrap();
        check.required_string(&body, "grafanaRole", 1, 10).unwrap();
        match check.finish() {
            Err(AwsError::Validation { reason, fields, .. }) => {
                assert_eq!(reason, ValidationReason::FieldValidationFailed);
                let names: Vec<_> = fields.iter().map(|f| f.name.as_str()).collect();
                assert_eq!(names, ["name", "secondsToLive", "grafanaRole"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wrong_json_type_cannot_parse() {
        let body = Body::parse(br#"{"name": 5}"#).unwrap();
        let err = Checker::new()
            .required_string(&body, "name", 1, 128)
            .unwrap_err();
        assert!(matches!(
            err,
            AwsError::Validation {
                reason: ValidationReason::CannotParse,
                ..
            }
        ));
        assert!(Body::parse(b"{not json").is_err());
        assert!(Body::parse(b"[1]").is_err());
        assert!(Body::parse(b"").is_ok());
    }
}
