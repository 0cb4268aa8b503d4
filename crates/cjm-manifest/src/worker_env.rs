//! A plugin's `WORKER_ENV` contract, typed: the reference's `EnvVarSpec` entries
//! as its introspection writes them into `code.worker_env`.

use serde_json::Value;

use crate::manifest::CodeSection;

/// One variable a plugin's worker reads at start-up (the reference's
/// `EnvVarSpec`): a secret from the secret store, or a visible value from the
/// operator's override, the manifest's `install.env_vars` or its default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerEnvVar {
    /// The variable's name, e.g. `GEMINI_API_KEY`.
    pub name: String,
    /// Whether its value comes from the secret store (never shown).
    pub secret: bool,
    /// Whether the worker cannot do useful work without it.
    pub required: bool,
    /// A display label.
    pub label: String,
    /// Help text.
    pub description: String,
    /// The default of a visible variable (secrets have none), as the worker
    /// gets it: a default that is not a string (`8080`, `true`) as its JSON text.
    pub default: Option<String>,
}

impl CodeSection {
    /// The declared `WORKER_ENV` entries, in declaration order. Entries that are
    /// not objects with a non-empty `name` are skipped, as the reference skips
    /// them when it resolves the environment.
    pub fn worker_env_vars(&self) -> Vec<WorkerEnvVar> {
        let Some(entries) = &self.worker_env else {
            return Vec::new();
        };
        entries
            .iter()
            .filter_map(Value::as_object)
            .filter_map(|entry| {
                let text = |key: &str| {
                    entry
                        .get(key)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                let flag = |key: &str| {
                    entry
                        .get(key)
                        .is_some_and(|v| !cjm_core::is_python_falsy(v))
                };
                let name = text("name");
                (!name.is_empty()).then(|| WorkerEnvVar {
                    secret: flag("secret"),
                    required: flag("required"),
                    label: text("label"),
                    description: text("description"),
                    default: entry
                        .get("default")
                        .filter(|v| !v.is_null())
                        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)),
                    name,
                })
            })
            .collect()
    }

    /// The names of the declared secrets, in declaration order.
    pub fn secret_names(&self) -> Vec<String> {
        self.worker_env_vars()
            .into_iter()
            .filter(|v| v.secret)
            .map(|v| v.name)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::CodeSection;

    #[test]
    fn worker_env_entries_are_read_as_the_reference_declares_them() {
        let code = CodeSection {
            worker_env: Some(vec![
                json!({"name": "GEMINI_API_KEY", "secret": true, "required": true, "label": "Gemini key"}),
                json!({"name": "GEMINI_MODEL", "default": "flash", "description": "model"}),
                json!({"name": "PORT", "default": 8080}),
                json!({"name": "UNSET", "default": null}),
                json!({"secret": true}),
                json!("not an object"),
            ]),
            ..CodeSection::default()
        };
        let vars = code.worker_env_vars();
        assert_eq!(vars.len(), 4);
        assert!(vars[0].secret && vars[0].required);
        assert_eq!(vars[0].label, "Gemini key");
        assert_eq!(vars[1].default.as_deref(), Some("flash"));
        assert!(!vars[1].secret);
        assert_eq!(vars[2].default.as_deref(), Some("8080"), "a number as text");
        assert_eq!(vars[3].default, None, "null is no default");
        assert_eq!(code.secret_names(), ["GEMINI_API_KEY"]);
    }
}
