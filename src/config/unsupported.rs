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
    Ok(())
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
    }

    #[test]
    fn accepts_what_wharf_implements() {
        let tree = json!({
            "listeners": {"*:80": {"pass": "routes", "backlog": 10}},
            "routes": [{"action": {"proxy": "http://127.0.0.1:1"}}],
            "applications": {"a": {"type": "wasm", "processes": 1, "limits": {}}},
            "settings": {"http": {"log_route": true}}
        });
        assert_eq!(check(&tree), Ok(()));
    }
}
