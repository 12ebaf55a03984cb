//! Rules a JSON Schema cannot state because they relate two values, or a value and the
//! operating system: checked after the schema, before references.

use serde_json::Value;

/// Longest Unix socket path the kernel accepts (`sun_path` is 108 bytes with the NUL).
const MAX_UNIX_PATH: usize = 107;

/// Checks the tree; the error is a complete validation detail.
pub fn check(tree: &Value) -> Result<(), String> {
    if let Some(listeners) = tree.get("listeners").and_then(Value::as_object) {
        for address in listeners.keys() {
            if let Some(path) = address.strip_prefix("unix:")
                && path.len() > MAX_UNIX_PATH
            {
                return Err(format!(
                    "listeners/{address}: the socket path is {} bytes long; the limit is \
                     {MAX_UNIX_PATH}",
                    path.len()
                ));
            }
        }
    }
    if let Some(apps) = tree.get("applications").and_then(Value::as_object) {
        for (name, app) in apps {
            let processes = app.get("processes");
            let max = processes.and_then(|p| p.get("max")).and_then(Value::as_i64);
            let spare = processes
                .and_then(|p| p.get("spare"))
                .and_then(Value::as_i64);
            if let Some(spare) = spare
                && spare > max.unwrap_or(1)
            {
                return Err(format!(
                    "applications/{name}/processes/spare: must not exceed max ({})",
                    max.unwrap_or(1)
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn spare_may_not_exceed_max() {
        let ok = json!({"applications": {"a": {"processes": {"max": 4, "spare": 4}}}});
        assert_eq!(check(&ok), Ok(()));
        let bad = json!({"applications": {"a": {"processes": {"spare": 2}}}});
        assert_eq!(
            check(&bad),
            Err("applications/a/processes/spare: must not exceed max (1)".to_owned())
        );
    }

    #[test]
    fn unix_socket_paths_must_fit() {
        let long = format!("unix:/{}", "x".repeat(120));
        let bad = json!({"listeners": {long: {"pass": "routes"}}});
        assert!(check(&bad).is_err_and(|e| e.contains("the limit is 107")));
    }
}
