//! The four operations of the control API on a config tree: read, replace or create,
//! append, remove — with Unit's rules for missing parents and array indexes.

use serde_json::{Map, Value};
use thiserror::Error;

use super::path::array_index;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum EditError {
    /// The path, or the parent of the node to create, does not exist.
    #[error("value doesn't exist")]
    NotFound,
    /// The operation does not apply to the node (POST to a non-array or to the root).
    #[error("method isn't allowed")]
    NotAllowed,
}

/// The node at `path`, if any.
pub fn get<'a>(tree: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(tree, |node, segment| match node {
        Value::Object(members) => members.get(segment),
        Value::Array(elements) => array_index(segment).and_then(|i| elements.get(i)),
        _ => None,
    })
}

fn get_mut<'a>(tree: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(tree, |node, segment| match node {
        Value::Object(members) => members.get_mut(segment),
        Value::Array(elements) => array_index(segment).and_then(|i| elements.get_mut(i)),
        _ => None,
    })
}

/// Replaces the node at `path`, or creates it under an existing parent.
pub fn put(tree: &mut Value, path: &[String], value: Value) -> Result<(), EditError> {
    let Some((last, parent_path)) = path.split_last() else {
        *tree = value;
        return Ok(());
    };
    match get_mut(tree, parent_path).ok_or(EditError::NotFound)? {
        Value::Object(members) => {
            members.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(elements) => match array_index(last) {
            Some(i) if i < elements.len() => {
                elements[i] = value;
                Ok(())
            }
            Some(i) if i == elements.len() => {
                elements.push(value);
                Ok(())
            }
            _ => Err(EditError::NotFound),
        },
        _ => Err(EditError::NotFound),
    }
}

/// Appends `value` to the array at `path`.
pub fn post(tree: &mut Value, path: &[String], value: Value) -> Result<(), EditError> {
    if path.is_empty() {
        return Err(EditError::NotAllowed);
    }
    match get_mut(tree, path).ok_or(EditError::NotFound)? {
        Value::Array(elements) => {
            elements.push(value);
            Ok(())
        }
        _ => Err(EditError::NotAllowed),
    }
}

/// Removes the node at `path`; later array elements shift down. The root becomes `{}`.
pub fn delete(tree: &mut Value, path: &[String]) -> Result<(), EditError> {
    let Some((last, parent_path)) = path.split_last() else {
        *tree = Value::Object(Map::new());
        return Ok(());
    };
    let removed = match get_mut(tree, parent_path).ok_or(EditError::NotFound)? {
        Value::Object(members) => members.shift_remove(last).is_some(),
        Value::Array(elements) => match array_index(last) {
            Some(i) if i < elements.len() => {
                elements.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    };
    if removed {
        Ok(())
    } else {
        Err(EditError::NotFound)
    }
}

/// Whether two trees are the same, member order included: the order of `applications`
/// and of a named route's members is visible in `GET /config` and in config order.
pub fn identical(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|((ka, va), (kb, vb))| ka == kb && identical(va, vb))
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| identical(a, b))
        }
        (a, b) => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(path: &[&str]) -> Vec<String> {
        path.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn put_creates_only_under_existing_parents() {
        let mut tree = json!({"a": {"b": 1}, "l": [1, 2]});
        put(&mut tree, &p(&["a", "c"]), json!(2)).expect("create");
        put(&mut tree, &p(&["a", "b"]), json!(3)).expect("replace");
        assert_eq!(
            put(&mut tree, &p(&["x", "y"]), json!(0)),
            Err(EditError::NotFound)
        );
        assert_eq!(
            put(&mut tree, &p(&["a", "b", "c"]), json!(0)),
            Err(EditError::NotFound)
        );
        put(&mut tree, &p(&["l", "01"]), json!(9)).expect("replace by index");
        put(&mut tree, &p(&["l", "2"]), json!(4)).expect("append at len");
        assert_eq!(
            put(&mut tree, &p(&["l", "4"]), json!(0)),
            Err(EditError::NotFound)
        );
        assert_eq!(
            put(&mut tree, &p(&["l", "-1"]), json!(0)),
            Err(EditError::NotFound)
        );
        assert_eq!(tree, json!({"a": {"b": 3, "c": 2}, "l": [1, 9, 4]}));
    }

    #[test]
    fn replacing_a_member_keeps_its_place() {
        let mut tree = json!({"a": 1, "b": 2});
        put(&mut tree, &p(&["a"]), json!(3)).expect("replace");
        assert_eq!(
            serde_json::to_string(&tree).expect("json"),
            r#"{"a":3,"b":2}"#
        );
    }

    #[test]
    fn post_appends_to_arrays_only() {
        let mut tree = json!({"l": [], "o": {}});
        post(&mut tree, &p(&["l"]), json!(1)).expect("append");
        assert_eq!(
            post(&mut tree, &p(&["o"]), json!(1)),
            Err(EditError::NotAllowed)
        );
        assert_eq!(post(&mut tree, &[], json!(1)), Err(EditError::NotAllowed));
        assert_eq!(
            post(&mut tree, &p(&["m"]), json!(1)),
            Err(EditError::NotFound)
        );
        assert_eq!(tree, json!({"l": [1], "o": {}}));
    }

    #[test]
    fn delete_shifts_arrays_and_empties_the_root() {
        let mut tree = json!({"l": [0, 1, 2], "o": {"k": 1}});
        delete(&mut tree, &p(&["l", "0"])).expect("delete");
        assert_eq!(tree["l"], json!([1, 2]));
        assert_eq!(delete(&mut tree, &p(&["l", "2"])), Err(EditError::NotFound));
        assert_eq!(delete(&mut tree, &p(&["o", "x"])), Err(EditError::NotFound));
        delete(&mut tree, &[]).expect("root");
        assert_eq!(tree, json!({}));
    }

    #[test]
    fn identical_trees_have_the_same_members_in_the_same_order() {
        let tree = json!({"a": {"x": 1, "y": [1, {"z": null}]}, "b": "s"});
        assert!(identical(&tree, &tree.clone()));
        assert!(!identical(
            &tree,
            &json!({"b": "s", "a": {"x": 1, "y": [1, {"z": null}]}})
        ));
        assert!(!identical(
            &tree,
            &json!({"a": {"x": 1, "y": [1, {"z": 0}]}, "b": "s"})
        ));
        assert!(!identical(&json!([1, 2]), &json!([1, 2, 3])));
        assert!(!identical(&json!(1), &json!(1.0)));
    }

    #[test]
    fn get_reads_scalars_and_indexes() {
        let tree = json!({"l": [{"x": true}]});
        assert_eq!(get(&tree, &p(&["l", "0", "x"])), Some(&json!(true)));
        assert_eq!(get(&tree, &p(&["l", "x"])), None);
        assert_eq!(get(&tree, &p(&["l", "0", "x", "y"])), None);
    }
}
