//! `backend: conda`: the named environment, created as the reference creates it.

use cjm_manifest::PluginSpec;

use super::Installer;
use crate::conda::CondaSource;
use crate::error::EnvError;
use crate::key::{EnvKey, EnvRequest};
use crate::store::Env;

impl Installer {
    /// `backend: conda`: the reference's way. The named environment is created (from
    /// `env_file` or `python_version`) unless it exists, removed first with `force`;
    /// then pip installs the requirements and the worker wheel into it.
    pub(super) fn conda_env(
        &self,
        spec: &PluginSpec,
        req: &EnvRequest,
        force: bool,
    ) -> Result<Env, EnvError> {
        let Some(conda) = &self.conda else {
            return Err(EnvError::Unsupported { backend: "conda" });
        };
        if !conda.available() {
            return Err(EnvError::RuntimeSetup {
                problem: format!(
                    "the conda runtime {} was not found",
                    conda.program().display()
                ),
                fix: conda.missing_hint(),
            });
        }
        let name = &spec.env_name;
        let mut exists = conda.env_exists(name)?;
        if exists && force {
            conda.remove(name)?;
            exists = false;
        }
        if !exists {
            let source = match (&spec.env_file, &spec.python_version) {
                (Some(file), _) if file.contains("://") => CondaSource::EnvFile(file.clone()),
                (Some(file), _) => {
                    CondaSource::EnvFile(self.base_dir.join(file).to_string_lossy().into_owned())
                }
                (None, version) => CondaSource::PythonVersion(
                    version
                        .clone()
                        .unwrap_or_else(|| self.default_python.clone()),
                ),
            };
            conda.create(name, &source)?;
        }
        let mut args = Vec::new();
        if req.ignore_requires_python {
            args.push("--ignore-requires-python".to_owned());
        }
        if !req.constraints.is_empty() {
            // Kept in the environment, beside what it was resolved under.
            let prefix = conda.env_prefix(name)?.unwrap_or_default();
            let file = prefix.join(crate::store::CONDA_CONSTRAINTS);
            fs_err::write(&file, crate::store::constraints_text(&req.constraints)).map_err(
                |source| EnvError::Io {
                    what: "writing the constraints".into(),
                    source,
                },
            )?;
            args.extend(["-c".to_owned(), file.to_string_lossy().into_owned()]);
        }
        if !req.local_sources.is_empty() {
            // pip leaves an installed version alone, even when its folder changed.
            args.push("--force-reinstall".to_owned());
        }
        if req.no_index {
            args.push("--no-index".to_owned());
        }
        if let Some(url) = &req.index_url {
            args.extend(["--index-url".to_owned(), url.clone()]);
        }
        for url in &req.extra_index_urls {
            args.extend(["--extra-index-url".to_owned(), url.clone()]);
        }
        for dir in &req.find_links {
            args.extend([
                "--find-links".to_owned(),
                dir.to_string_lossy().into_owned(),
            ]);
        }
        args.extend(req.requirements.iter().cloned());
        args.extend(req.wheels.iter().map(|w| w.to_string_lossy().into_owned()));
        let installed = conda.pip_install(name, &args);
        let python = installed.and_then(|()| conda.python(name));
        match python {
            Ok(Some(python)) => Ok(Env {
                key: EnvKey(name.clone()),
                dir: conda.env_prefix(name)?.unwrap_or_default(),
                python,
                lock: String::new(),
                built: !exists,
            }),
            failed => {
                if !exists {
                    let _ = conda.remove(name);
                }
                Err(failed.err().unwrap_or_else(|| EnvError::RuntimeSetup {
                    problem: format!("conda environment {name} has no bin/python"),
                    fix: "give the environment a Python (python_version, or python in env_file's dependencies)".into(),
                }))
            }
        }
    }
}
