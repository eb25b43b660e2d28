//! The AWS error envelope of the AMG control plane (restJson1).
//!
//! Every error answer carries the modelled HTTP status, the header `x-amzn-ErrorType: <Name>` (the
//! SDK reads the error code from it first) and a JSON body with `message` plus the members the model
//! gives that error. `retryAfterSeconds` is modelled as the `Retry-After` header, never a body member.
//! This module only shapes errors; deciding when to answer one belongs to `ops` and `faults`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{json, Map, Value};

/// The service code AMG puts in quota errors.
pub const SERVICE_CODE: &str = "grafana";

/// Why a request failed validation (the model's `ValidationExceptionReason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValidationReason {
    UnknownOperation,
    CannotParse,
    FieldValidationFailed,
    Other,
}

impl ValidationReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            ValidationReason::UnknownOperation => "UNKNOWN_OPERATION",
            ValidationReason::CannotParse => "CANNOT_PARSE",
            ValidationReason::FieldValidationFailed => "FIELD_VALIDATION_FAILED",
            ValidationReason::Other => "OTHER",
        }
    }
}

/// One entry of a ValidationException's `fieldList`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub name: String,
    pub message: String,
}

/// An error answer of the AWS side of the emulator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AwsError {
    Validation {
        message: String,
        reason: ValidationReason,
        fields: Vec<FieldError>,
    },
    AccessDenied {
        message: String,
    },
    ResourceNotFound {
        message: String,
        resource_id: String,
        resource_type: String,
    },
    Conflict {
        message: String,
        resource_id: String,
        resource_type: String,
    },
    ServiceQuotaExceeded {
        message: String,
        resource_id: String,
        resource_type: String,
        quota_code: String,
    },
    Throttling {
        message: String,
        quota_code: Option<String>,
        retry_after_seconds: u32,
    },
    InternalServer {
        message: String,
        retry_after_seconds: u32,
    },
    /// Not in the model: what the whole service answers while `down` is injected. The SDK surfaces
    /// it as an unhandled error with code `ServiceUnavailableException`.
    ServiceUnavailable {
        message: String,
        retry_after_seconds: u32,
    },
}

/// The error names a fault rule may ask for (the modelled ones, plus the outage answer).
pub const INJECTABLE_ERRORS: &[&str] = &[
    "ValidationException",
    "AccessDeniedException",
    "ResourceNotFoundException",
    "ConflictException",
    "ServiceQuotaExceededException",
    "ThrottlingException",
    "InternalServerException",
    "ServiceUnavailableException",
];

impl AwsError {
    pub fn validation(reason: ValidationReason, message: impl Into<String>) -> Self {
        AwsError::Validation {
            message: message.into(),
            reason,
            fields: Vec::new(),
        }
    }

    pub fn not_found(resource_type: &str, resource_id: &str, message: impl Into<String>) -> Self {
        AwsError::ResourceNotFound {
            message: message.into(),
            resource_id: resource_id.to_string(),
            resource_type: resource_type.to_string(),
        }
    }

    pub fn conflict(resource_type: &str, resource_id: &str, message: impl Into<String>) -> Self {
        AwsError::Conflict {
            message: message.into(),
            resource_id: resource_id.to_string(),
            resource_type: resource_type.to_string(),
        }
    }

    /// The error name, as sent in `x-amzn-ErrorType`.
    pub fn name(&self) -> &'static str {
        match self {
            AwsError::Validation { .. } => "ValidationException",
            AwsError::AccessDenied { .. } => "AccessDeniedException",
            AwsError::ResourceNotFound { .. } => "ResourceNotFoundException",
            AwsError::Conflict { .. } => "ConflictException",
            AwsError::ServiceQuotaExceeded { .. } => "ServiceQuotaExceededException",
            AwsError::Throttling { .. } => "ThrottlingException",
            AwsError::InternalServer { .. } => "InternalServerException",
            AwsError::ServiceUnavailable { .. } => "ServiceUnavailableException",
        }
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        match self {
            AwsError::Validation { message, .. }
            | AwsError::AccessDenied { message }
            | AwsError::ResourceNotFound { message, .. }
            | AwsError::Conflict { message, .. }
            | AwsError::ServiceQuotaExceeded { message, .. }
            | AwsError::Throttling { message, .. }
            | AwsError::InternalServer { message, .. }
            | AwsError::ServiceUnavailable { message, .. } => message,
        }
    }

    /// The modelled HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            AwsError::Validation { .. } => 400,
            AwsError::ServiceQuotaExceeded { .. } => 402,
            AwsError::AccessDenied { .. } => 403,
            AwsError::ResourceNotFound { .. } => 404,
            AwsError::Conflict { .. } => 409,
            AwsError::Throttling { .. } => 429,
            AwsError::InternalServer { .. } => 500,
            AwsError::ServiceUnavailable { .. } => 503,
        }
    }

    /// The `Retry-After` header value, on the errors that model it.
    pub fn retry_after_seconds(&self) -> Option<u32> {
        match self {
            AwsError::Throttling {
                retry_after_seconds,
                ..
            }
            | AwsError::InternalServer {
                retry_after_seconds,
                ..
            }
            | AwsError::ServiceUnavailable {
                retry_after_seconds,
                ..
            } => Some(*retry_after_seconds),
            _ => None,
        }
    }

    /// The JSON body: `message` and the modelled members.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        let mut put = |k: &str, v: Value| {
            body.insert(k.to_string(), v);
        };
        match self {
            AwsError::Validation {
                message,
                reason,
                fields,
            } => {
                put("message", json!(message));
                put("reason", json!(reason.as_str()));
                if !fields.is_empty() {
                    put("fieldList", json!(fields));
                }
            }
            AwsError::AccessDenied { message }
            | AwsError::InternalServer { message, .. }
            | AwsError::ServiceUnavailable { message, .. } => put("message", json!(message)),
            AwsError::ResourceNotFound {
                message,
                resource_id,
                resource_type,
            }
            | AwsError::Conflict {
                message,
                resource_id,
                resource_type,
            } => {
                put("message", json!(message));
                put("resourceId", json!(resource_id));
                put("resourceType", json!(resource_type));
            }
            AwsError::ServiceQuotaExceeded {
                message,
                resource_id,
                resource_type,
                quota_code,
            } => {
                put("message", json!(message));
                put("resourceId", json!(resource_id));
                put("resourceType", json!(resource_type));
                put("serviceCode", json!(SERVICE_CODE));
                put("quotaCode", json!(quota_code));
            }
            AwsError::Throttling {
                message,
                quota_code,
                ..
            } => {
                put("message", json!(message));
                put("serviceCode", json!(SERVICE_CODE));
                if let Some(code) = quota_code {
                    put("quotaCode", json!(code));
                }
            }
        }
        Value::Object(body)
    }
}

impl IntoResponse for AwsError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, json_body(&self.body())).into_response();
        let headers = response.headers_mut();
        headers.insert("x-amzn-ErrorType", HeaderValue::from_static(self.name()));
        if let Some(secs) = self.retry_after_seconds() {
            headers.insert("Retry-After", HeaderValue::from(secs));
        }
        response
    }
}

/// A JSON body with `content-type: application/json` (axum's `Json` would do, but this keeps the
/// serialisation infallible and the header exact).
pub fn json_body(value: &Value) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        value.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_carries_retry_after_header_and_service_code() {
        let err = AwsError::Throttling {
            message: "slow down".into(),
            quota_code: None,
            retry_after_seconds: 7,
        };
        let response = err.clone().into_response();
        assert_eq!(response.status(), 429);
        assert_eq!(
            response.headers()["x-amzn-errortype"],
            "ThrottlingException"
        );
        assert_eq!(response.headers()["retry-after"], "7");
        assert_eq!(
            err.body(),
            json!({"message": "slow down", "serviceCode": "grafana"})
        );
    }

    #[test]
    fn validation_omits_empty_field_list() {
        let err = AwsError::validation(ValidationReason::CannotParse, "bad json");
        assert_eq!(
            err.body(),
            json!({"message": "bad json", "reason": "CANNOT_PARSE"})
        );
    }
}
