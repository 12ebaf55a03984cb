//! Members of Unit's configuration that Wharf accepts the shape of but does not
//! implement. A config naming one is refused with its path, after the schema: accepting
//! it would ignore it silently.

use serde_json::Value;

/// Members of a listener object.
const LISTENER: [(&str, &str); 1] = [(
    "forwarded",
    "is not supported yet: Wharf does not read trusted proxy headers",
)];

/// Members of an application object (Unit's process options, which a Wasm guest has
/// no use for or Wharf does not offer).
const APPLICATION: [(&str, &str); 6] = [
    (
        "working_directory",
        "is not supported: a Wasm guest sees only its \"access\" directories",
    ),
    (
        "stdout",
        "is not supported: guest output goes to Wharf's log (--log)",
    ),
    (
        "stderr",
        "is not supported: guest output goes to Wharf's log (--log)",
    ),
    (
        "user",
        "is not supported: every guest runs in Wharf's process, as its user",
    ),
    (
        "group",
        "is not supported: every guest runs in Wharf's process, as its group",
    ),
    (
        "isolation",
        "is not supported: Wasm guests are isolated by the runtime, not by namespaces",
    ),
];

/// Members of a route step's `action`.
const ACTION: [(&str, &str); 1] = [("proxy", "the \"proxy\" action is not supported yet")];

/// Checks a tree that passed the schema; the error is a complete validation detail.
pub fn check(tree: &Value) -> Result<(), String> {
    for (address, listener) in members(tree.get("listeners")) {
        refuse(listener, &LISTENER, &format!("listeners/{address}"))?;
    }
    for (name, app) in members(tree.get("applications")) {
        refuse(app, &APPLICATION, &format!("applications/{name}"))?;
    }
    if tree.pointer("/settings/js_module").is_some() {
        return Err("settings/js_module: is not supported: Wharf runs no njs".to_owned());
    }
    match tree.get("routes") {
        Some(Value::Array(steps)) => actions(steps, "routes"),
        Some(Value::Object(named)) => named.iter().try_for_each(|(name, steps)| {
            let steps = steps.as_array().map_or(&[][..], Vec::as_slice);
            actions(steps, &format!("routes/{name}"))
        }),
        _ => Ok(()),
    }
}

fn actions(steps: &[Value], at: &str) -> Result<(), String> {
    steps
        .iter()
        .enumerate()
        .try_for_each(|(i, step)| match step.get("action") {
            Some(action) => action_chain(action, format!("{at}/{i}/action")),
            None => Ok(()),
        })
}

/// An action and the `fallback` actions under it.
fn action_chain(action: &Value, at: String) -> Result<(), String> {
    refuse(action, &ACTION, &at)?;
    match action.get("fallback") {
        Some(fallback) => action_chain(fallback, format!("{at}/fallback")),
        None => Ok(()),
    }
}

fn members(value: Option<&Value>) -> impl Iterator<Item = (&String, &Value)> {
    value.and_then(Value::as_object).into_iter().flatten()
}

fn refuse(object: &Value, unsupported: &[(&str, &str)], at: &str) -> Result<(), String> {
    match unsupported
        .iter()
        .find(|(member, _)| object.get(member).is_some())
    {
        Some((member, why)) => Err(format!("{at}/{member}: {why}")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_the_first_unsupported_member_with_its_path() {
        let forwarded = json!({"listeners": {"*:80": {"pass": "routes", "forwarded": {}}}});
        assert!(check(&forwarded).is_err_and(|e| e.starts_with("listeners/*:80/forwarded: ")));
        let user = json!({"applications": {"a": {"type": "wasm", "user": "nobody"}}});
        assert!(check(&user).is_err_and(|e| e.starts_with("applications/a/user: ")));
        let named = json!({"routes": {"main": [{"action": {"proxy": "http://127.0.0.1:1"}}]}});
        assert!(check(&named).is_err_and(|e| e.starts_with("routes/main/0/action/proxy: ")));
        let fallback = json!({"routes": [{"action": {"share": "/s", "fallback": {"proxy": "http://127.0.0.1:1"}}}]});
        assert!(check(&fallback).is_err_and(|e| e.starts_with("routes/0/action/fallback/proxy: ")));
    }

    #[test]
    fn accepts_what_wharf_implements() {
        let tree = json!({
            "listeners": {"*:80": {"pass": "routes", "backlog": 10}},
            "routes": [{"action": {"return": 204}}],
            "applications": {"a": {"type": "wasm", "processes": 1, "limits": {}}},
            "settings": {"http": {"log_route": true}}
        });
        assert_eq!(check(&tree), Ok(()));
    }
}
