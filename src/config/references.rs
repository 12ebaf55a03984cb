//! The second validation pass: every `pass` must name something that exists, in the shape
//! the config has (`routes` for an array of steps, `routes/<name>` for named routes).
//!
//! The schema cannot see across the tree, so deleting an application or a route that is
//! still referenced is caught here, with the path of the dangling reference.

use serde_json::Value;

use super::path::decode_segment;

/// Checks every `pass` in the tree; the error is a complete validation detail.
pub fn check(tree: &Value) -> Result<(), String> {
    if let Some(listeners) = tree.get("listeners").and_then(Value::as_object) {
        for (address, listener) in listeners {
            if let Some(pass) = listener.get("pass").and_then(Value::as_str) {
                check_pass(tree, pass).map_err(|e| format!("listeners/{address}/pass: {e}"))?;
            }
        }
    }
    match tree.get("routes") {
        Some(Value::Array(steps)) => check_steps(tree, "routes", steps),
        Some(Value::Object(named)) => named.iter().try_for_each(|(name, steps)| match steps {
            Value::Array(steps) => check_steps(tree, &format!("routes/{name}"), steps),
            _ => Ok(()),
        }),
        _ => Ok(()),
    }
}

fn check_steps(tree: &Value, prefix: &str, steps: &[Value]) -> Result<(), String> {
    for (i, step) in steps.iter().enumerate() {
        let mut action = step.get("action");
        let mut at = format!("{prefix}/{i}/action");
        // A `share` action may carry a `fallback` action, which may pass on in turn.
        while let Some(act) = action {
            if let Some(pass) = act.get("pass").and_then(Value::as_str) {
                check_pass(tree, pass).map_err(|e| format!("{at}/pass: {e}"))?;
            }
            action = act.get("fallback");
            at.push_str("/fallback");
        }
    }
    Ok(())
}

fn check_pass(tree: &Value, pass: &str) -> Result<(), String> {
    // A pass with variables is resolved per request; there is nothing to check here.
    if pass.contains('$') {
        return Ok(());
    }
    let (kind, rest) = match pass.split_once('/') {
        Some((kind, rest)) => (kind, Some(rest)),
        None => (pass, None),
    };
    let routes = tree.get("routes");
    match (kind, rest) {
        ("applications", Some(name)) => {
            let name = decode_segment(name).map_err(|_| "invalid percent-encoding".to_owned())?;
            let exists = tree
                .get("applications")
                .and_then(Value::as_object)
                .is_some_and(|apps| apps.contains_key(&name));
            if exists {
                Ok(())
            } else {
                Err(format!("application \"{name}\" does not exist"))
            }
        }
        ("routes", None) => match routes {
            Some(Value::Array(_)) => Ok(()),
            Some(Value::Object(_)) => {
                Err("routes is an object of named routes; use \"routes/<name>\"".to_owned())
            }
            _ => Err("no routes are configured".to_owned()),
        },
        ("routes", Some(name)) => {
            let name = decode_segment(name).map_err(|_| "invalid percent-encoding".to_owned())?;
            match routes {
                Some(Value::Array(_)) => Err(format!(
                    "routes is an array, so pass \"{pass}\" cannot name a route; use \"routes\""
                )),
                Some(Value::Object(named)) if named.contains_key(&name) => Ok(()),
                _ => Err(format!("route \"{name}\" does not exist")),
            }
        }
        ("upstreams", Some(name)) => {
            let name = decode_segment(name).map_err(|_| "invalid percent-encoding".to_owned())?;
            let exists = tree
                .get("upstreams")
                .and_then(Value::as_object)
                .is_some_and(|upstreams| upstreams.contains_key(&name));
            if exists {
                Ok(())
            } else {
                Err(format!("upstream \"{name}\" does not exist"))
            }
        }
        _ => Err(
            "must be \"applications/<name>\", \"routes\", \"routes/<name>\" or \"upstreams/<name>\""
                .to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_existing_targets() {
        let tree = json!({
            "listeners": {"*:80": {"pass": "applications/a%20b"}, "*:81": {"pass": "routes/main"}},
            "routes": {"main": [{"action": {"pass": "applications/a b"}}]},
            "applications": {"a b": {}}
        });
        assert_eq!(check(&tree), Ok(()));
    }

    #[test]
    fn names_the_dangling_reference() {
        let tree = json!({
            "routes": [{"action": {"share": "/x", "fallback": {"pass": "applications/gone"}}}],
            "applications": {}
        });
        assert_eq!(
            check(&tree),
            Err("routes/0/action/fallback/pass: application \"gone\" does not exist".to_owned())
        );
    }

    #[test]
    fn checks_the_shape_of_routes() {
        let array = json!({"listeners": {"*:80": {"pass": "routes/x"}}, "routes": []});
        assert!(check(&array).is_err_and(|e| e.contains("routes is an array")));
        let named = json!({"listeners": {"*:80": {"pass": "routes"}}, "routes": {}});
        assert!(check(&named).is_err_and(|e| e.contains("object of named routes")));
        let upstream = json!({"listeners": {"*:80": {"pass": "upstreams/gone"}}, "upstreams": {}});
        assert_eq!(
            check(&upstream),
            Err("listeners/*:80/pass: upstream \"gone\" does not exist".to_owned())
        );
        let upstream =
            json!({"routes": [{"action": {"pass": "upstreams/u"}}], "upstreams": {"u": {}}});
        assert_eq!(check(&upstream), Ok(()));
        let variable = json!({"listeners": {"*:80": {"pass": "applications/$host"}}});
        assert_eq!(check(&variable), Ok(()));
    }
}
