//! Per-plugin secrets in the reference's `secrets.json`.

use fs_err::os::unix::fs::OpenOptionsExt as _;
use std::fmt;
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value};

use crate::StoreError;
use crate::paths::{self, SECRETS_DIR_NAME, SECRETS_FILE_NAME};

/// The scope a secret goes under when none (or an empty one) is given.
pub const DEFAULT_SCOPE: &str = "__default__";

/// The lock file next to `secrets.json` that writers hold while they read,
/// change and replace it. The reference takes no lock and ignores the file.
const LOCK_FILE_NAME: &str = "secrets.json.lock";

/// A secret's value. It prints as `***` in `Debug`, has no `Display`, and is
/// read only through [`SecretValue::expose`].
#[derive(Clone)]
pub struct SecretValue(String);

impl SecretValue {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it (a worker's
    /// environment, say).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(***)")
    }
}

impl From<String> for SecretValue {
    fn from(value: String) -> Self {
        Self(value)
    }
}

/// The reference's `LocalSecretStore`: `secrets.json` in a secrets directory,
/// laid out as `{scope: {plugin: {KEY: "value"}}}` with [`DEFAULT_SCOPE`] for no
/// scope, written as Python's `json.dump(data, f, indent=2)` writes it.
///
/// The directory is made 0700 and the file 0600. Unlike the reference, which
/// truncates and rewrites the file in place, a write goes to a temporary file in
/// the same directory (0600 before its first byte) that then replaces
/// `secrets.json`, so a reader never sees half a file; and writers in any number
/// of processes using this crate take turns on a lock file, so none loses
/// another's update. Nothing is created until the first write; reading a file
/// that does not exist yet answers with nothing.
///
/// A file that is not JSON, or not in that layout, is an error here (the
/// reference reads it as empty and its next write would drop every secret in
/// it). No error or `Debug` output contains a secret value.
#[derive(Clone, Debug)]
pub struct SecretStore {
    paths: Arc<Paths>,
}

#[derive(Debug)]
struct Paths {
    dir: PathBuf,
    file: PathBuf,
    lock: PathBuf,
}

impl SecretStore {
    /// A store whose file is `secrets_dir/secrets.json`.
    pub fn new(secrets_dir: impl Into<PathBuf>) -> Self {
        let dir = secrets_dir.into();
        Self {
            paths: Arc::new(Paths {
                file: dir.join(SECRETS_FILE_NAME),
                lock: dir.join(LOCK_FILE_NAME),
                dir,
            }),
        }
    }

    /// The store the reference's manager uses: `<data_dir>/secrets`, or
    /// `~/.cjm/secrets` without a data directory.
    pub fn in_data_dir(data_dir: Option<&Path>) -> Result<Self, StoreError> {
        paths::in_data_dir(data_dir, SECRETS_DIR_NAME).map(Self::new)
    }

    /// The secrets directory.
    pub fn dir(&self) -> &Path {
        &self.paths.dir
    }

    /// The secrets file.
    pub fn path(&self) -> &Path {
        &self.paths.file
    }

    /// The value of `key` for `plugin_name` under `scope`, or `None`.
    pub async fn get_secret(
        &self,
        plugin_name: &str,
        key: &str,
        scope: Option<&str>,
    ) -> Result<Option<SecretValue>, StoreError> {
        let (plugin, key, scope) = (plugin_name.to_owned(), key.to_owned(), scope_key(scope));
        self.blocking("read a secret from", move |paths| {
            let data = paths.load()?;
            let Some(keys) = paths.keys(&data, &scope, &plugin)? else {
                return Ok(None);
            };
            match keys.get(&key) {
                None => Ok(None),
                Some(Value::String(value)) => Ok(Some(SecretValue(value.clone()))),
                Some(_) => Err(paths.malformed(format!(
                    "secret `{key}` of plugin `{plugin}` in scope `{scope}` is not a string"
                ))),
            }
        })
        .await
    }

    /// Stores `value` as `key` for `plugin_name` under `scope`, replacing any
    /// earlier value.
    pub async fn set_secret(
        &self,
        plugin_name: &str,
        key: &str,
        value: &SecretValue,
        scope: Option<&str>,
    ) -> Result<(), StoreError> {
        if let Some(reason) = secret_key_problem(key) {
            return Err(StoreError::Invalid {
                path: self.path().to_owned(),
                action: format!("store secret {key:?} of plugin `{plugin_name}`"),
                reason: reason.to_owned(),
            });
        }
        let (plugin, key, scope) = (plugin_name.to_owned(), key.to_owned(), scope_key(scope));
        let value = value.clone();
        self.blocking("write a secret to", move |paths| {
            paths
                .update(|data| {
                    let plugins = object_entry(data, &scope).ok_or_else(|| {
                        paths.malformed(format!("scope `{scope}` is not an object"))
                    })?;
                    let keys = object_entry(plugins, &plugin).ok_or_else(|| {
                        paths.malformed(format!(
                            "plugin `{plugin}` in scope `{scope}` is not an object"
                        ))
                    })?;
                    keys.insert(key, Value::String(value.0));
                    Ok(true)
                })
                .map(drop)
        })
        .await
    }

    /// Removes `key` for `plugin_name` under `scope`, and the plugin's and the
    /// scope's entries when they are left empty; `true` if there was a secret.
    pub async fn delete_secret(
        &self,
        plugin_name: &str,
        key: &str,
        scope: Option<&str>,
    ) -> Result<bool, StoreError> {
        let (plugin, key, scope) = (plugin_name.to_owned(), key.to_owned(), scope_key(scope));
        self.blocking("delete a secret from", move |paths| {
            if !paths.exists()? {
                return Ok(false);
            }
            paths.update(|data| {
                if paths
                    .keys(data, &scope, &plugin)?
                    .is_none_or(|keys| !keys.contains_key(&key))
                {
                    return Ok(false);
                }
                // `keys` just found every level to be an object. `shift_remove`
                // keeps the other entries in order, as Python's `del` does.
                let emptied = |value: Option<&mut Value>, name: &str| {
                    value.and_then(Value::as_object_mut).is_some_and(|map| {
                        map.shift_remove(name);
                        map.is_empty()
                    })
                };
                let plugins = data.get_mut(&scope).and_then(Value::as_object_mut);
                if let Some(plugins) = plugins
                    && emptied(plugins.get_mut(&plugin), &key)
                {
                    plugins.shift_remove(&plugin);
                }
                if data.get(&scope).is_none_or(cjm_core::is_python_falsy) {
                    data.shift_remove(&scope);
                }
                Ok(true)
            })
        })
        .await
    }

    /// The names of `plugin_name`'s secrets under `scope`, sorted; never their
    /// values.
    pub async fn list_keys(
        &self,
        plugin_name: &str,
        scope: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let (plugin, scope) = (plugin_name.to_owned(), scope_key(scope));
        self.blocking("list the secrets in", move |paths| {
            let data = paths.load()?;
            let mut names: Vec<String> = paths
                .keys(&data, &scope, &plugin)?
                .map(|keys| keys.keys().cloned().collect())
                .unwrap_or_default();
            names.sort_unstable();
            Ok(names)
        })
        .await
    }

    /// Runs `work` off the async runtime: the lock wait and the file IO block.
    async fn blocking<T: Send + 'static>(
        &self,
        action: &'static str,
        work: impl FnOnce(&Paths) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let paths = Arc::clone(&self.paths);
        tokio::task::spawn_blocking(move || work(&paths))
            .await
            .map_err(|source| StoreError::Task {
                path: self.paths.file.clone(),
                action,
                source,
            })?
    }
}

/// The reference's `_scope_key`: no scope and the empty scope both mean
/// [`DEFAULT_SCOPE`].
fn scope_key(scope: Option<&str>) -> String {
    scope
        .filter(|scope| !scope.is_empty())
        .unwrap_or(DEFAULT_SCOPE)
        .to_owned()
}

/// `map[name]` as an object, inserted empty at the end when absent (Python's
/// `setdefault(name, {})`); `None` when it is something else.
fn object_entry<'a>(
    map: &'a mut Map<String, Value>,
    name: &str,
) -> Option<&'a mut Map<String, Value>> {
    map.entry(name)
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
}

/// Wraps an IO error on `path` with what was being done.
fn io_error(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Io {
        path,
        action,
        source,
    }
}

/// Distinguishes the temporary files of writers in one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Paths {
    fn malformed(&self, what: String) -> StoreError {
        StoreError::SecretsMalformed {
            path: self.file.clone(),
            what,
        }
    }

    fn exists(&self) -> Result<bool, StoreError> {
        self.file
            .try_exists()
            .map_err(io_error(&self.file, "look for the secrets file"))
    }

    /// The whole file, or an empty object when it does not exist.
    fn load(&self) -> Result<Map<String, Value>, StoreError> {
        let text = match cjm_core::read_capped(&self.file, cjm_core::MAX_CONFIG_FILE_BYTES) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Map::new()),
            Err(error) => return Err(io_error(&self.file, "read the secrets file")(error)),
        };
        if let Ok(metadata) = fs_err::metadata(&self.file) {
            let mode = metadata.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %self.file.display(),
                    mode = format_args!("{:o}", mode & 0o777),
                    "the secrets file has loose permissions; expected 0600"
                );
            }
        }
        // The parser's message is not kept: it could quote the text.
        match serde_json::from_str(&text) {
            Ok(Value::Object(data)) => Ok(data),
            Ok(_) => Err(self.malformed("the top level is not an object".to_owned())),
            Err(error) => Err(StoreError::SecretsNotJson {
                path: self.file.clone(),
                line: error.line(),
                column: error.column(),
            }),
        }
    }

    /// `data[scope][plugin]`, or `None` when either is absent.
    fn keys<'a>(
        &self,
        data: &'a Map<String, Value>,
        scope: &str,
        plugin: &str,
    ) -> Result<Option<&'a Map<String, Value>>, StoreError> {
        let Some(plugins) = data.get(scope) else {
            return Ok(None);
        };
        let plugins = plugins
            .as_object()
            .ok_or_else(|| self.malformed(format!("scope `{scope}` is not an object")))?;
        let Some(keys) = plugins.get(plugin) else {
            return Ok(None);
        };
        keys.as_object().map(Some).ok_or_else(|| {
            self.malformed(format!(
                "plugin `{plugin}` in scope `{scope}` is not an object"
            ))
        })
    }

    /// Reads, changes and replaces the file under the writers' lock. `change`
    /// says whether it changed anything; nothing is written when it did not.
    fn update(
        &self,
        change: impl FnOnce(&mut Map<String, Value>) -> Result<bool, StoreError>,
    ) -> Result<bool, StoreError> {
        self.make_dir()?;
        let lock = fs_err::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&self.lock)
            .map_err(io_error(&self.lock, "open the lock file"))?;
        // Released when `lock` is closed, however this returns.
        lock.lock()
            .map_err(io_error(&self.lock, "lock the lock file"))?;
        let mut data = self.load()?;
        if !change(&mut data)? {
            return Ok(false);
        }
        let text = cjm_core::python_json(&Value::Object(data), Some(2));
        self.replace(text.as_bytes())?;
        Ok(true)
    }

    /// The secrets directory, 0700 whether it is new or not (as the reference
    /// leaves it after every write).
    fn make_dir(&self) -> Result<(), StoreError> {
        if let Some(parent) = self.dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs_err::create_dir_all(parent).map_err(io_error(parent, "create the directory"))?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(&self.dir) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(error) => {
                return Err(io_error(&self.dir, "create the secrets directory")(error));
            }
        }
        fs_err::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_error(&self.dir, "restrict the secrets directory"))
    }

    /// Replaces the file with `bytes`: a 0600 temporary file beside it, written
    /// and synced, renamed over it, and the directory synced.
    fn replace(&self, bytes: &[u8]) -> Result<(), StoreError> {
        let temp = self.dir.join(format!(
            ".{SECRETS_FILE_NAME}.{}.{}.tmp",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let written = write_temp(&temp, bytes).and_then(|()| {
            fs_err::rename(&temp, &self.file)
                .map_err(io_error(&self.file, "replace the secrets file"))
        });
        if written.is_err() {
            _ = fs_err::remove_file(&temp);
        }
        written?;
        fs_err::File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error(&self.dir, "sync the secrets directory"))
    }
}

/// Writes `bytes` to a new 0600 file `temp` and syncs it.
fn write_temp(temp: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    // A file left by a writer that died with this pid and counter.
    _ = fs_err::remove_file(temp);
    let mut file = fs_err::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)
        .map_err(io_error(temp, "create a temporary secrets file"))?;
    // The umask can only clear bits of 0600; setting it again before the
    // first byte makes it exactly 0600 whatever the umask.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io_error(temp, "restrict a temporary secrets file"))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_error(temp, "write a temporary secrets file"))
}

/// Why `key` cannot name a secret, or `None`. A secret reaches its worker as an
/// environment variable named by its key, and no environment variable's name is
/// empty or holds a `=` or a NUL byte.
pub fn secret_key_problem(key: &str) -> Option<&'static str> {
    if key.is_empty() {
        Some("a secret's key cannot be empty: it is the name of the variable its worker reads")
    } else if key.contains('=') {
        Some("a secret's key cannot contain `=`: it is the name of the variable its worker reads")
    } else if key.contains('\0') {
        Some("a secret's key cannot contain a NUL byte")
    } else {
        None
    }
}
