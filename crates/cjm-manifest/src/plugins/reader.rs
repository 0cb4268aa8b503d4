//! Reading a plugins.yaml: every entry checked, every problem collected with its line,
//! unknown keys kept as warnings that name the key probably meant.

//! plugins.yaml: the operator's list of plugins to install.

use std::{collections::BTreeMap, fmt};

pub(super) use cjm_core::Constraints;
use cjm_core::yaml::{Node, Value};

use super::{Backend, DeclaredResources, PluginSpec, PluginsFile, render};
use crate::error::Problem;

pub(crate) const RESOURCE_KEYS: [&str; 3] = ["ram_mb", "vram_mb", "gpu"];

/// Every key an entry may have: the reference's, then cjm's.
pub(crate) const ENTRY_KEYS: &[&str] = &[
    "name",
    "env_name",
    "package",
    "env_file",
    "python_version",
    "interface_libs",
    "backend",
    "python_path",
    "requirements",
    "index_url",
    "extra_index_urls",
    "find_links",
    "no_index",
    "env_vars",
    "resources",
    "ignore_requires_python",
    "constraints",
    "allow_missing_interface",
];

#[derive(Default)]
pub(crate) struct Reader {
    pub(crate) problems: Vec<Problem>,
    pub(crate) warnings: Vec<Problem>,
}

impl Reader {
    fn problem(&mut self, path: &str, line: Option<usize>, message: impl Into<String>) {
        self.problems
            .push(Problem::new(path, message).at_line(line));
    }

    /// Warns about every key of `node` not in `known`, naming the one likely meant.
    fn unknown_keys(&mut self, node: &Node, known: &[&str], path: &str) {
        let Value::Map(entries) = &node.value else {
            return;
        };
        for (key, _) in entries {
            let Value::Str(name) = &key.value else {
                continue;
            };
            if known.contains(&name.as_str()) {
                continue;
            }
            let field = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            let message = match cjm_core::did_you_mean(name, known.iter().copied()) {
                Some(meant) => format!("unknown key ignored; did you mean `{meant}`?"),
                None => format!("unknown key ignored (known: {})", known.join(", ")),
            };
            self.warnings
                .push(Problem::new(field, message).at_line(line_of(key)));
        }
    }

    /// A name cjm turns into a file or folder name must stay inside its folder.
    fn path_component(&mut self, node: &Node, key: &str, path: &str, text: &str) {
        if text.is_empty() {
            return;
        }
        if let Some(why) = cjm_core::path_component_problem(text) {
            self.problem(
                &format!("{path}.{key}"),
                node.get(key).and_then(line_of),
                format!("{text:?} cannot be used: it {why}, and cjm uses it as a file name"),
            );
        }
    }

    fn wrong(&mut self, path: &str, node: &Node, what: &str) {
        self.problem(
            path,
            line_of(node),
            format!("expected {what}, found {}", Found(&node.value)),
        );
    }

    pub(crate) fn file(&mut self, root: &Node) -> PluginsFile {
        if !matches!(root.value, Value::Map(_)) {
            self.wrong("", root, "a mapping with a `plugins` list at the top level");
            return PluginsFile::default();
        }
        self.unknown_keys(root, &["plugins"], "");
        let plugins = match root.get("plugins") {
            None => {
                self.problem("plugins", line_of(root), "required key is missing");
                return PluginsFile::default();
            }
            Some(Node {
                value: Value::Seq(items),
                ..
            }) => items,
            Some(node) => {
                self.wrong("plugins", node, "a list");
                return PluginsFile::default();
            }
        };
        let mut file = PluginsFile::default();
        let mut first_seen: BTreeMap<String, (usize, Option<usize>)> = BTreeMap::new();
        for (index, node) in plugins.iter().enumerate() {
            let path = format!("plugins[{index}]");
            let Some(spec) = self.plugin(node, &path) else {
                continue;
            };
            if !spec.name.is_empty() {
                if let Some((first, first_line)) = first_seen.get(&spec.name) {
                    let name_line = node.get("name").and_then(line_of);
                    let at = first_line.map_or_else(String::new, |line| format!(", line {line}"));
                    self.problem(
                        &format!("{path}.name"),
                        name_line,
                        format!(
                            "duplicate plugin name {:?} (first at plugins[{first}]{at})",
                            spec.name
                        ),
                    );
                } else {
                    let line = node.get("name").and_then(line_of);
                    first_seen.insert(spec.name.clone(), (index, line));
                }
            }
            file.plugins.push(spec);
        }
        file
    }

    fn plugin(&mut self, node: &Node, path: &str) -> Option<PluginSpec> {
        if !matches!(node.value, Value::Map(_)) {
            self.wrong(path, node, "a mapping");
            return None;
        }
        let field = |key: &str| format!("{path}.{key}");
        self.unknown_keys(node, ENTRY_KEYS, path);
        let name = self.required_string(node, "name", path);
        self.path_component(node, "name", path, &name);
        let env_name = self.required_string(node, "env_name", path);
        self.path_component(node, "env_name", path, &env_name);
        let package = self.required_string(node, "package", path);
        let env_file = self.optional_string(node, "env_file", path);
        let python_version = node
            .get("python_version")
            .and_then(|version| match &version.value {
                Value::Str(text) if is_python_version(text) => Some(text.clone()),
                _ => {
                    self.wrong(&field("python_version"), version, "a string like \"3.11\"");
                    None
                }
            });
        let explicit_backend = node
            .get("backend")
            .and_then(|backend| match &backend.value {
                Value::Str(text) if text.parse::<Backend>().is_ok() => text.parse().ok(),
                _ => {
                    self.wrong(
                        &field("backend"),
                        backend,
                        "one of \"uv\", \"conda\", \"python\"",
                    );
                    None
                }
            });
        let spec = PluginSpec {
            name,
            env_name,
            package,
            env_file,
            python_version,
            interface_libs: self.strings(node, "interface_libs", path),
            explicit_backend,
            python_path: self.optional_string(node, "python_path", path),
            requirements: self.strings(node, "requirements", path),
            index_url: self.optional_string(node, "index_url", path),
            extra_index_urls: self.strings(node, "extra_index_urls", path),
            find_links: self.strings(node, "find_links", path),
            no_index: self.optional_bool(node, "no_index", path),
            env_vars: self.env_vars(node, path),
            resources: self.resources(node, path),
            ignore_requires_python: node
                .get("ignore_requires_python")
                .map(|_| self.optional_bool(node, "ignore_requires_python", path)),
            constraints: self.constraints(node, path),
            allow_missing_interface: self.optional_bool(node, "allow_missing_interface", path),
            line: line_of(node),
        };
        self.environment_source(node, path, &spec);
        Some(spec)
    }

    /// Which keys say how the environment is made, for the backend in use.
    fn environment_source(&mut self, node: &Node, path: &str, spec: &PluginSpec) {
        let has = |key: &str| node.get(key).is_some();
        let backend_written = has("backend");
        if backend_written && spec.explicit_backend.is_none() {
            // The backend itself is wrong; the rest would only guess.
            return;
        }
        match spec.backend() {
            Backend::Python => {
                if !has("python_path") {
                    self.problem(
                        &format!("{path}.python_path"),
                        line_of(node),
                        "required field is missing (backend python runs an existing interpreter)",
                    );
                }
            }
            backend => {
                if !has("env_file") && !has("python_version") {
                    self.problem(
                        path,
                        line_of(node),
                        "must declare either `env_file` or `python_version` to say how the environment is created",
                    );
                }
                if let Some(python_path) = node.get("python_path") {
                    self.problem(
                        &format!("{path}.python_path"),
                        line_of(python_path),
                        format!("only used by backend python, not {backend}"),
                    );
                }
                if backend == Backend::Uv
                    && let Some(env_file) = node.get("env_file")
                {
                    self.problem(
                        &format!("{path}.env_file"),
                        line_of(env_file),
                        "backend uv cannot read a conda environment file; use backend conda, or python_version",
                    );
                }
            }
        }
    }

    fn required_string(&mut self, node: &Node, key: &str, path: &str) -> String {
        let field = format!("{path}.{key}");
        match node.get(key) {
            None
            | Some(Node {
                value: Value::Null, ..
            }) => {
                self.problem(&field, line_of(node), "required field is missing");
                String::new()
            }
            Some(
                found @ Node {
                    value: Value::Str(text),
                    ..
                },
            ) => {
                if text.is_empty() {
                    self.problem(&field, line_of(found), "required field is empty");
                }
                text.clone()
            }
            Some(other) => {
                self.wrong(&field, other, "a string");
                String::new()
            }
        }
    }

    fn optional_string(&mut self, node: &Node, key: &str, path: &str) -> Option<String> {
        let value = node.get(key)?;
        match &value.value {
            Value::Str(text) if !text.is_empty() => Some(text.clone()),
            _ => {
                self.wrong(&format!("{path}.{key}"), value, "a non-empty string");
                None
            }
        }
    }

    fn optional_bool(&mut self, node: &Node, key: &str, path: &str) -> bool {
        match node.get(key) {
            None => false,
            Some(Node {
                value: Value::Bool(flag),
                ..
            }) => *flag,
            Some(value) => {
                self.wrong(&format!("{path}.{key}"), value, "true or false");
                false
            }
        }
    }

    fn strings(&mut self, node: &Node, key: &str, path: &str) -> Vec<String> {
        let field = format!("{path}.{key}");
        let Some(value) = node.get(key) else {
            return Vec::new();
        };
        let Value::Seq(items) = &value.value else {
            self.wrong(&field, value, "a list of strings");
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            match &item.value {
                Value::Str(text) if !text.is_empty() => out.push(text.clone()),
                _ => self.wrong(&format!("{field}[{index}]"), item, "a non-empty string"),
            }
        }
        out
    }

    /// `constraints`: a file path or a list of pins.
    fn constraints(&mut self, node: &Node, path: &str) -> Option<Constraints> {
        let value = node.get("constraints")?;
        match &value.value {
            Value::Str(file) if !file.is_empty() => Some(Constraints::File(file.into())),
            Value::Seq(_) => Some(Constraints::Pins(self.strings(node, "constraints", path))),
            _ => {
                self.wrong(
                    &format!("{path}.constraints"),
                    value,
                    "a constraints file path or a list of pins",
                );
                None
            }
        }
    }

    fn env_vars(&mut self, node: &Node, path: &str) -> BTreeMap<String, String> {
        let field = format!("{path}.env_vars");
        let mut out = BTreeMap::new();
        let Some(value) = node.get("env_vars") else {
            return out;
        };
        let Value::Map(entries) = &value.value else {
            self.wrong(&field, value, "a mapping of variable names to strings");
            return out;
        };
        for (key, item) in entries {
            let Value::Str(name) = &key.value else {
                self.wrong(&field, key, "a variable name");
                continue;
            };
            let item_path = format!("{field}.{name}");
            if !is_env_var_name(name) {
                self.problem(
                    &item_path,
                    line_of(key),
                    "not a variable name (letters, digits and `_`, not starting with a digit)",
                );
                continue;
            }
            match &item.value {
                Value::Str(text) => {
                    out.insert(name.clone(), text.clone());
                }
                _ => self.wrong(&item_path, item, "a string (quote numbers and booleans)"),
            }
        }
        out
    }

    fn resources(&mut self, node: &Node, path: &str) -> DeclaredResources {
        let field = format!("{path}.resources");
        let mut out = DeclaredResources::default();
        let Some(value) = node.get("resources") else {
            return out;
        };
        let Value::Map(entries) = &value.value else {
            self.wrong(&field, value, "a mapping");
            return out;
        };
        for (key, item) in entries {
            let name = match &key.value {
                Value::Str(name) if RESOURCE_KEYS.contains(&name.as_str()) => name.as_str(),
                _ => {
                    self.wrong(&field, key, "one of the keys ram_mb, vram_mb, gpu");
                    continue;
                }
            };
            let item_path = format!("{field}.{name}");
            match (name, &item.value) {
                ("gpu", Value::Bool(gpu)) => out.gpu = *gpu,
                ("gpu", _) => self.wrong(&item_path, item, "a boolean"),
                (_, Value::Int(amount)) if u64::try_from(*amount).is_ok() => {
                    let amount = u64::try_from(*amount).ok();
                    if name == "ram_mb" {
                        out.ram_mb = amount;
                    } else {
                        out.vram_mb = amount;
                    }
                }
                _ => self.wrong(&item_path, item, "a whole number of MiB"),
            }
        }
        out
    }
}

/// The line `node` starts on, when the parser knew it.
pub(crate) fn line_of(node: &Node) -> Option<usize> {
    (node.line > 0).then_some(node.line as usize)
}

/// A value in flow style, cut short when long: what a message shows after
/// `found`.
pub(crate) struct Found<'a>(&'a Value);

impl fmt::Display for Found<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::new();
        render(&mut text, self.0);
        if text.chars().count() > 60 {
            let cut: String = text.chars().take(57).collect();
            write!(f, "{cut}...")
        } else {
            f.write_str(&text)
        }
    }
}

/// `3`, `3.11`, `3.11.4`: what conda's `python=` and uv's `--python` both take.
pub(crate) fn is_python_version(text: &str) -> bool {
    let parts: Vec<&str> = text.split('.').collect();
    parts.len() <= 3
        && parts
            .iter()
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
}

pub(crate) fn is_env_var_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|first| first == b'_' || first.is_ascii_alphabetic())
        && bytes.all(|b| b == b'_' || b.is_ascii_alphanumeric())
}
