//! The reference's manifest rules (`cjm-ctl validate`), with paths.

use serde_json::{Map, Value};

use crate::{
    error::Problem,
    json::{expected, join},
    manifest::{CURRENT_FORMAT_VERSION, Reader, unrecognized_format_version},
};

/// Every problem with a manifest, by the rules of the reference's `cjm-ctl
/// validate` plus the type checks [`Manifest`](crate::Manifest) reading needs;
/// empty when the manifest is valid.
///
/// The rules, for v2.0 (`format_version: "2.0"`): `install` and `code` are
/// objects; `code.name`, `version`, `module`, `class`, `interface` and
/// `install.python_path` are non-empty strings; `description` is a string,
/// possibly empty (unlike the reference, whose own installer writes empty
/// ones that its validator then rejects); `interface` is
/// a dotted name; the other install fields are strings and `env_vars` an object
/// when present; `regenerated_at` and `drift_tracking.config_schema_hash` are
/// strings or null; `config_schema` is an object (with an object `properties`)
/// or null; a `taxonomy` block has non-empty string `domain`, `role` and
/// `interface_fqcn`, the last equal to `interface`; a `resources` block has a
/// boolean `requires_gpu` and lists of strings `platforms` and
/// `accelerators`. A legacy v1.0 manifest (no `format_version`) has the same
/// rules on its flat keys, plus string `category` and `category_override`
/// when present. Any other `format_version` is the only problem reported.
pub fn validate_manifest(value: &Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    let Value::Object(root) = value else {
        return vec![Problem::new("", expected("a JSON object", value))];
    };
    match root.get("format_version") {
        None | Some(Value::Null) => v1(root, &mut problems),
        Some(Value::String(version)) if version == CURRENT_FORMAT_VERSION => {
            v2(root, &mut problems);
        }
        Some(other) => {
            return vec![Problem::new(
                "format_version",
                unrecognized_format_version(other),
            )];
        }
    }
    // The typed reader's checks go further in places (env_vars values,
    // worker_env); add what it finds where the rules above said nothing.
    let mut reader = Reader::default();
    reader.manifest(value);
    for problem in reader.problems {
        let covered = problems.iter().any(|known: &Problem| {
            problem.path.strip_prefix(&known.path).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with('.') || rest.starts_with('[')
            })
        });
        if !covered {
            problems.push(problem);
        }
    }
    problems
}

fn v2(root: &Map<String, Value>, problems: &mut Vec<Problem>) {
    let empty = Map::new();
    let install = required_section(root, "install", problems).unwrap_or(&empty);
    let code = required_section(root, "code", problems).unwrap_or(&empty);
    let drift = optional_section(root, "drift_tracking", problems).unwrap_or(&empty);
    optional_section(root, "overrides", problems);

    // The reference requires a non-empty description too, yet its installer writes
    // an empty one for every plugin whose metadata has none; such a manifest loads
    // and runs, so only its presence and type are checked.
    for key in [
        "name",
        "version",
        "description",
        "module",
        "class",
        "interface",
    ] {
        if key == "description" {
            present_string(code, key, "code", problems);
        } else {
            required_string(code, key, "code", problems);
        }
    }
    required_string(install, "python_path", "install", problems);
    dotted_interface(code, "code", problems);
    for key in [
        "conda_env",
        "db_path",
        "installed_at",
        "installer_version",
        "package_source",
    ] {
        string_when_present(install, key, "install", problems);
    }
    object_when_present(install, "env_vars", "install", problems);
    string_or_null(code, "regenerated_at", "code", problems);
    config_schema(code, "code", problems);
    taxonomy(code, "code", problems);
    resources(code, "code", problems);
    string_or_null(drift, "config_schema_hash", "drift_tracking", problems);
}

fn v1(root: &Map<String, Value>, problems: &mut Vec<Problem>) {
    for key in [
        "name",
        "version",
        "description",
        "module",
        "class",
        "interface",
        "python_path",
    ] {
        if key == "description" {
            present_string(root, key, "", problems);
        } else {
            required_string(root, key, "", problems);
        }
    }
    dotted_interface(root, "", problems);
    for key in [
        "category",
        "category_override",
        "conda_env",
        "db_path",
        "package_source",
        "installer_version",
        "installed_at",
    ] {
        string_when_present(root, key, "", problems);
    }
    object_when_present(root, "env_vars", "", problems);
    config_schema(root, "", problems);
    taxonomy(root, "", problems);
    resources(root, "", problems);
}

fn required_section<'a>(
    root: &'a Map<String, Value>,
    key: &str,
    problems: &mut Vec<Problem>,
) -> Option<&'a Map<String, Value>> {
    match root.get(key) {
        None | Some(Value::Null) => {
            problems.push(Problem::new(key, "required section is missing"));
            None
        }
        Some(Value::Object(section)) => Some(section),
        Some(value) => {
            problems.push(Problem::new(key, expected("an object", value)));
            None
        }
    }
}

fn optional_section<'a>(
    root: &'a Map<String, Value>,
    key: &str,
    problems: &mut Vec<Problem>,
) -> Option<&'a Map<String, Value>> {
    match root.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::Object(section)) => Some(section),
        Some(value) => {
            problems.push(Problem::new(key, expected("an object or null", value)));
            None
        }
    }
}

fn required_string(map: &Map<String, Value>, key: &str, path: &str, problems: &mut Vec<Problem>) {
    match map.get(key) {
        None | Some(Value::Null) => {
            problems.push(Problem::new(join(path, key), "required field is missing"));
        }
        Some(Value::String(text)) if text.is_empty() => {
            problems.push(Problem::new(join(path, key), "required field is empty"));
        }
        Some(Value::String(_)) => {}
        Some(value) => problems.push(Problem::new(join(path, key), expected("a string", value))),
    }
}

/// A field that must be there as a string, possibly empty.
fn present_string(map: &Map<String, Value>, key: &str, path: &str, problems: &mut Vec<Problem>) {
    match map.get(key) {
        None | Some(Value::Null) => {
            problems.push(Problem::new(join(path, key), "required field is missing"));
        }
        Some(Value::String(_)) => {}
        Some(value) => problems.push(Problem::new(join(path, key), expected("a string", value))),
    }
}

/// Present means present: an explicit null is not a string either.
fn string_when_present(
    map: &Map<String, Value>,
    key: &str,
    path: &str,
    problems: &mut Vec<Problem>,
) {
    if let Some(value) = map.get(key)
        && !value.is_string()
    {
        problems.push(Problem::new(join(path, key), expected("a string", value)));
    }
}

fn object_when_present(
    map: &Map<String, Value>,
    key: &str,
    path: &str,
    problems: &mut Vec<Problem>,
) {
    if let Some(value) = map.get(key)
        && !value.is_object()
    {
        problems.push(Problem::new(join(path, key), expected("an object", value)));
    }
}

fn string_or_null(map: &Map<String, Value>, key: &str, path: &str, problems: &mut Vec<Problem>) {
    if let Some(value) = map.get(key)
        && !value.is_null()
        && !value.is_string()
    {
        problems.push(Problem::new(
            join(path, key),
            expected("a string or null", value),
        ));
    }
}

fn dotted_interface(map: &Map<String, Value>, path: &str, problems: &mut Vec<Problem>) {
    if let Some(Value::String(interface)) = map.get("interface")
        && !interface.is_empty()
        && !interface.contains('.')
    {
        problems.push(Problem::new(
            join(path, "interface"),
            format!(
                "{} is not a dotted name (expected `module.subpackage.ClassName`)",
                quoted(interface)
            ),
        ));
    }
}

fn config_schema(map: &Map<String, Value>, path: &str, problems: &mut Vec<Problem>) {
    let path = join(path, "config_schema");
    match map.get("config_schema") {
        None | Some(Value::Null) => {}
        Some(Value::Object(schema)) => {
            if let Some(properties) = schema.get("properties")
                && !properties.is_object()
            {
                problems.push(Problem::new(
                    join(&path, "properties"),
                    expected("an object", properties),
                ));
            }
        }
        Some(value) => problems.push(Problem::new(path, expected("an object or null", value))),
    }
}

/// The object under `key`, if there is one; a value that is neither an object nor
/// null is a problem.
fn optional_block<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    block_path: &str,
    problems: &mut Vec<Problem>,
) -> Option<&'a Map<String, Value>> {
    match map.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::Object(block)) => Some(block),
        Some(value) => {
            problems.push(Problem::new(
                block_path.to_owned(),
                expected("an object or null", value),
            ));
            None
        }
    }
}

fn taxonomy(map: &Map<String, Value>, path: &str, problems: &mut Vec<Problem>) {
    let block_path = join(path, "taxonomy");
    let Some(block) = optional_block(map, "taxonomy", &block_path, problems) else {
        return;
    };
    for key in ["domain", "role", "interface_fqcn"] {
        required_string(block, key, &block_path, problems);
    }
    if let (Some(Value::String(fqcn)), Some(Value::String(interface))) =
        (block.get("interface_fqcn"), map.get("interface"))
        && !interface.is_empty()
        && fqcn != interface
    {
        problems.push(Problem::new(
            join(&block_path, "interface_fqcn"),
            format!(
                "{} disagrees with {} {}",
                quoted(fqcn),
                join(path, "interface"),
                quoted(interface)
            ),
        ));
    }
}

fn resources(map: &Map<String, Value>, path: &str, problems: &mut Vec<Problem>) {
    let block_path = join(path, "resources");
    let Some(block) = optional_block(map, "resources", &block_path, problems) else {
        return;
    };
    if let Some(value) = block.get("requires_gpu")
        && !value.is_boolean()
    {
        problems.push(Problem::new(
            join(&block_path, "requires_gpu"),
            expected("a boolean", value),
        ));
    }
    for key in ["platforms", "accelerators"] {
        let list_path = join(&block_path, key);
        match block.get(key) {
            None => {}
            Some(Value::Array(items)) => {
                for (index, item) in items.iter().enumerate() {
                    if !item.is_string() {
                        problems.push(Problem::new(
                            format!("{list_path}[{index}]"),
                            expected("a string", item),
                        ));
                    }
                }
            }
            Some(value) => problems.push(Problem::new(list_path, expected("a list", value))),
        }
    }
}

fn quoted(text: &str) -> String {
    cjm_core::python_json(&Value::String(text.to_owned()), None)
}
